"""The persistent vector index: each file's passage vectors cached under the cache folder, keyed by content and model."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptcli.engines import Embedding
from gptcli.knowledge.dense import embed_array, model_key
from gptcli.knowledge.passages import PASSAGE_CHARS, KbFile

INDEX_VERSION = 1  # bump when passage splitting or what is embedded changes: old entries are then unused
MANIFEST = "files.json"  # which entry each file path last had, so a changed or deleted file's old entry goes


def index_root() -> Path:
    from gptcli.config import cache_dir

    return cache_dir() / "kb-index"


def embedded_text(title: str, text: str) -> str:
    """What a passage's vector is computed from: its heading path (a strong hint of its topic) and its text."""
    return f"{title}\n{text}" if title else text


@dataclass
class IndexStats:
    """What one lookup did: files found in the cache, embedded anew, and cache entries that were unreadable."""

    cached: int = 0
    embedded: int = 0
    corrupt: int = 0
    passages_embedded: int = 0
    removed: list[str] = field(default_factory=list)


class VectorIndex:
    """Passage vectors for one embedding model, one cache file per knowledge-base file content.

    An entry is named by the SHA-256 of the file's bytes (plus the split settings and the index
    version), so a renamed file is still found, a changed file gets a new entry, and an entry that
    cannot be read or has the wrong shape is rebuilt. Writes are atomic (temporary file, rename).
    """

    def __init__(self, embedder: Embedding, root: Path | None = None, notice: Callable[[str], None] | None = None) -> None:
        self.embedder = embedder
        self.folder = (root or index_root()) / model_key(embedder)
        self.notice = notice
        self.stats = IndexStats()

    def entry(self, kb_file: KbFile, max_chars: int = PASSAGE_CHARS) -> Path:
        key = hashlib.sha256(f"{INDEX_VERSION}\0{max_chars}\0{kb_file.digest}".encode()).hexdigest()[:40]
        return self.folder / f"{key}.npy"

    def _read(self, path: Path, rows: int) -> np.ndarray | None:
        try:
            with open(path, "rb") as f:
                vectors = np.load(f, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError):
            vectors = None
        if vectors is not None and vectors.ndim == 2 and vectors.shape[0] == rows and np.isfinite(vectors).all():
            return vectors.astype(np.float32, copy=False)
        self.stats.corrupt += 1
        if self.notice:
            self.notice(f"the knowledge-base index entry {path.name} was unreadable: rebuilding it")
        return None

    def _write(self, path: Path, vectors: np.ndarray) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npy")
            try:
                with os.fdopen(fd, "wb") as f:
                    np.save(f, vectors, allow_pickle=False)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # a read-only or full cache folder costs speed next time, nothing else
            if self.notice:
                self.notice(f"knowledge-base index not saved: {exc.strerror or exc}")

    def vectors(self, files: Sequence[KbFile], max_chars: int = PASSAGE_CHARS) -> np.ndarray:
        """One unit-length row per passage of ``files``, in order: from the cache, or embedded and cached."""
        found: dict[int, np.ndarray] = {}
        missing: list[int] = []
        for i, kb_file in enumerate(files):
            if not kb_file.passages:
                found[i] = np.zeros((0, 0), dtype=np.float32)
                continue
            cached = self._read(self.entry(kb_file, max_chars), len(kb_file.passages))
            if cached is None:
                missing.append(i)
            else:
                found[i] = cached
                self.stats.cached += 1
        if missing:
            texts = [embedded_text(p.title, p.text) for i in missing for p in files[i].passages]
            rows = embed_array(self.embedder, texts)
            start = 0
            for i in missing:
                n = len(files[i].passages)
                found[i] = rows[start : start + n]
                start += n
                self._write(self.entry(files[i], max_chars), found[i])
            self.stats.embedded += len(missing)
            self.stats.passages_embedded += len(texts)
        self._update_manifest(files, max_chars)
        parts = [found[i] for i in range(len(files)) if files[i].passages]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    def _update_manifest(self, files: Sequence[KbFile], max_chars: int) -> None:
        """Remember each path's entry; drop the entries of files that changed or no longer exist."""
        path = self.folder / MANIFEST
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(manifest, dict):
                manifest = {}
        except (OSError, ValueError):
            manifest = {}
        before = dict(manifest)
        for kb_file in files:
            if kb_file.passages:
                manifest[str(kb_file.path.resolve())] = self.entry(kb_file, max_chars).name
        for name in list(manifest):
            if not Path(name).exists():
                del manifest[name]
        live = set(manifest.values())
        for name, entry in before.items():
            if entry not in live and isinstance(entry, str) and entry.endswith(".npy") and "/" not in entry:
                with contextlib.suppress(OSError):
                    (self.folder / entry).unlink()
                    self.stats.removed.append(name)
        if manifest != before:
            self._write_json(path, manifest)

    def _write_json(self, path: Path, data: dict[str, str]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=0)
            os.replace(tmp, path)
        except OSError:
            pass  # the manifest only tidies the cache
