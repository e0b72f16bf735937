"""The resume cache: finished chunks appended to a JSON-lines file, read back on the next run."""

from __future__ import annotations

import hashlib
import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from gptcli.errors import InputError


CACHE_VERSION = 1

# ---------------------------------------------------------------- the resume cache


class TranslationCache:
    """Finished chunks, appended to a JSON-lines file as they complete (one file per job settings).

    Each line is ``{"k": chunk key, "t": [translations], "c": [checks each failed]}``, written with one ``write`` and fsynced;
    a line cut short by a crash is skipped when the file is read back.
    """

    def __init__(self, folder: Path, job_key: str) -> None:
        from gptcli.config import ensure_private_dir

        try:
            ensure_private_dir(folder)
        except OSError as exc:
            raise InputError(f"cannot create the translation cache folder {folder}: {exc.strerror or exc}") from None
        self.path = folder / f"{job_key[:32]}.jsonl"
        self.entries: dict[str, tuple[list[str], list[tuple[str, ...]] | None]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        if isinstance(entry, dict) and isinstance(entry.get("k"), str) and isinstance(entry.get("t"), list):
                            checks = entry.get("c")
                            verdicts = None
                            if isinstance(checks, list) and len(checks) == len(entry["t"]):
                                verdicts = [tuple(str(name) for name in failed) for failed in checks if isinstance(failed, list)]
                            self.entries[entry["k"]] = ([str(t) for t in entry["t"]], verdicts if verdicts and len(verdicts) == len(entry["t"]) else None)
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(f"cannot read the translation cache {self.path}: {exc.strerror}") from None
        self.fd: int | None = None
        self.write_error: str | None = None

    def get(self, key: str, atoms: int) -> tuple[list[str], list[tuple[str, ...]] | None] | None:
        """A chunk's translations and the checks each failed (None: an entry written before checks)."""
        found = self.entries.get(key)
        if found is None or len(found[0]) != atoms:
            return None
        return found

    def put(self, key: str, translations: Sequence[str], checks: Sequence[Sequence[str]] = ()) -> None:
        """Keep a finished chunk; a cache that cannot be written (a full disk) is only a warning.

        The translation itself goes elsewhere, so it goes on: the first failure is kept in
        ``write_error`` for the command to report, and the cache stops trying.
        """
        self.entries[key] = (list(translations), [tuple(failed) for failed in checks] if checks else None)
        if self.write_error is not None:
            return
        entry: dict[str, object] = {"k": key, "t": list(translations)}
        if checks:
            entry["c"] = [list(failed) for failed in checks]
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self.fd, line.encode("utf-8"))
            os.fsync(self.fd)
        except OSError as exc:
            self.write_error = f"cannot write the translation cache {self.path}: {exc.strerror or exc}"
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def cache_folder() -> Path:
    from gptcli.config import data_dir

    return data_dir() / "translations"


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()
