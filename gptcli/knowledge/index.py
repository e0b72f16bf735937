"""The persistent vector index: each file's passage vectors cached under the cache folder, keyed by content and model."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gptcli.engines import Embedding
from gptcli.knowledge.dense import StaticEmbedder, embed_array, embedded_text, model_key
from gptcli.knowledge.passages import PASSAGE_CHARS, KbFile
from gptcli.textio import replace_file

INDEX_VERSION = 2  # bump when passage splitting or what is embedded changes: old entries are then unused (2: the multilingual encoder without headings)
NOTICE_PASSAGES = 200  # from this many passages to embed, say so first (the multilingual encoder: 3-4 ms each idle, 17 ms under load)
MANIFEST = "files.json"  # which entry each file path last had, so a changed or deleted file's old entry goes


def index_root() -> Path:
    from gptcli.config import cache_dir

    return cache_dir() / "kb-index"


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
        self.token_df: np.ndarray | None = None  # static vectors only: in how many passages each token is

    def entry(self, kb_file: KbFile, max_chars: int = PASSAGE_CHARS) -> Path:
        key = hashlib.sha256(f"{INDEX_VERSION}\0{max_chars}\0{kb_file.digest}".encode()).hexdigest()[:40]
        return self.folder / f"{key}.npz"

    def _read(self, path: Path, rows: int) -> dict[str, np.ndarray] | None:
        data: dict[str, np.ndarray] | None
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as archive:
                data = {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 - whatever a damaged file raises (zip, numpy, OS), it is rebuilt
            data = None
        vectors = data.get("vectors") if data else None
        valid = vectors is not None and vectors.ndim == 2 and vectors.shape[0] == rows and bool(np.isfinite(vectors).all())
        if valid and data is not None and isinstance(self.embedder, StaticEmbedder):
            valid = "token_ids" in data and "token_df" in data
        if valid and data is not None:
            return data
        self.stats.corrupt += 1
        if self.notice:
            self.notice(f"the knowledge-base index entry {path.name} was unreadable: rebuilding it")
        return None

    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)  # type: ignore[arg-type]
            replace_file(path, buffer.getvalue(), mode=0o600)
        except OSError as exc:  # a read-only or full cache folder costs speed next time, nothing else
            if self.notice:
                self.notice(f"knowledge-base index not saved: {exc.strerror or exc}")

    def vectors(self, files: Sequence[KbFile], max_chars: int = PASSAGE_CHARS) -> np.ndarray:
        """One unit-length row per passage of ``files``, in order: from the cache, or embedded and cached.

        For the static vectors each entry also keeps its file's token document frequencies, summed
        into ``token_df`` (what weights a question's tokens), so a cached file is not even tokenized.
        """
        found: dict[int, dict[str, np.ndarray]] = {}
        missing: list[int] = []
        for i, kb_file in enumerate(files):
            if not kb_file.passages:
                continue
            cached = self._read(self.entry(kb_file, max_chars), len(kb_file.passages))
            if cached is None:
                missing.append(i)
            else:
                found[i] = cached
                self.stats.cached += 1
        if missing:
            texts = [embedded_text(self.embedder, p.title, p.text) for i in missing for p in files[i].passages]
            if len(texts) >= NOTICE_PASSAGES and self.notice:
                self.notice(f"indexing {len(texts)} knowledge-base passages with {self.embedder.model_name} (once: the index is kept in the cache)")
            rows = embed_array(self.embedder, texts)
            start = 0
            for i in missing:
                n = len(files[i].passages)
                found[i] = {"vectors": rows[start : start + n]}
                if isinstance(self.embedder, StaticEmbedder):
                    ids, df = self.embedder.token_df(texts[start : start + n])
                    found[i].update(token_ids=ids, token_df=df)
                start += n
                self._write(self.entry(files[i], max_chars), found[i])
            self.stats.embedded += len(missing)
            self.stats.passages_embedded += len(texts)
        self._update_manifest(files, max_chars)
        if isinstance(self.embedder, StaticEmbedder):
            self.token_df = np.zeros(self.embedder.vocabulary, dtype=np.float32)
            for data in found.values():
                np.add.at(self.token_df, data["token_ids"].astype(np.int64), data["token_df"])
        parts = [found[i]["vectors"] for i in range(len(files)) if i in found]
        return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, 0), dtype=np.float32)

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
            if entry not in live and isinstance(entry, str) and entry.endswith(".npz") and "/" not in entry:
                with contextlib.suppress(OSError):
                    (self.folder / entry).unlink()
                    self.stats.removed.append(name)
        if manifest != before:
            self._write_json(path, manifest)

    def _write_json(self, path: Path, data: dict[str, str]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            replace_file(path, json.dumps(data, indent=0).encode("utf-8"), mode=0o600)
        except OSError:
            pass  # the manifest only tidies the cache
