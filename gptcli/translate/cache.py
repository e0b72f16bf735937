"""The resume cache: finished chunks appended to a JSON-lines file, read back on the next run."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from gptcli.errors import InputError


CACHE_VERSION = 1

# ---------------------------------------------------------------- the resume cache


class TranslationCache:
    """Finished chunks, appended to a JSON-lines file as they complete (one file per job settings).

    Each line is ``{"k": chunk key, "t": [translations]}``, written with one ``write`` and fsynced;
    a line cut short by a crash is skipped when the file is read back.
    """

    def __init__(self, folder: Path, job_key: str) -> None:
        from gptcli.config import ensure_private_dir

        try:
            ensure_private_dir(folder)
        except OSError as exc:
            raise InputError(f"cannot create the translation cache folder {folder}: {exc.strerror or exc}") from None
        self.path = folder / f"{job_key[:32]}.jsonl"
        self.entries: dict[str, list[str]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        if isinstance(entry, dict) and isinstance(entry.get("k"), str) and isinstance(entry.get("t"), list):
                            self.entries[entry["k"]] = [str(t) for t in entry["t"]]
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(f"cannot read the translation cache {self.path}: {exc.strerror}") from None
        self.fd: int | None = None

    def get(self, key: str, atoms: int) -> list[str] | None:
        found = self.entries.get(key)
        return found if found is not None and len(found) == atoms else None

    def put(self, key: str, translations: Sequence[str]) -> None:
        line = json.dumps({"k": key, "t": list(translations)}, ensure_ascii=False) + "\n"
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self.fd, line.encode("utf-8"))
            os.fsync(self.fd)
        except OSError as exc:
            raise InputError(f"cannot write the translation cache {self.path}: {exc.strerror}") from None
        self.entries[key] = list(translations)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def cache_folder() -> Path:
    from gptcli.config import data_dir

    return data_dir() / "translations"


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()
