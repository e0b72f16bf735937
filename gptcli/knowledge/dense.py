"""Dense vectors for the knowledge base: static word embeddings shipped in a wheel, or any GGUF through llama.cpp."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from gptcli.engines import Embedding
from gptcli.errors import ModelError

if TYPE_CHECKING:
    from gptcli.config import Settings

STATIC = "static"  # the default: WordLlama's vectors, in its wheel (no download, no model to load)
NONE = "none"  # BM25 only


class StaticEmbedder:
    """WordLlama (l2_supercat, 256 dimensions): token vectors taken from Llama 2 70B's embedding table and
    trained for sentence similarity, averaged per text. The weights ship inside the ``wordllama`` wheel
    (16 MB), so it loads in a third of a second with no network.
    """

    dimensions = 256

    def __init__(self) -> None:
        from gptcli import compat

        try:
            wordllama = compat.import_wordllama()
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelError(f"the static embeddings need the wordllama package: {exc}") from None
        try:
            self._model = compat.load_wordllama(wordllama, self.dimensions)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load wordllama's bundled vectors: {exc}") from None
        version = getattr(wordllama, "__version__", "")
        self.model_name = f"wordllama-l2-supercat-{self.dimensions}"
        self.key = f"{self.model_name}-{version}"

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.embed(list(texts), norm=True), dtype=np.float32)

    def _ids(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self._model.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [[t for t, keep in zip(e.ids, e.attention_mask) if keep] for e in encoded]

    @property
    def vocabulary(self) -> int:
        return int(self._model.embedding.shape[0])

    def token_df(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """In how many of ``texts`` each token occurs: (token ids, counts), for :meth:`query_weights`."""
        df = np.zeros(self.vocabulary, dtype=np.float32)
        for ids in self._ids(texts):
            df[list(set(ids))] += 1
        present = np.nonzero(df)[0]
        return present.astype(np.int32), df[present]

    def query_weights(self, df: np.ndarray, passages: int) -> np.ndarray:
        """A weight per token for questions: its inverse document frequency in the knowledge base.

        A plain average of word vectors is dominated by the words every passage of a product shares
        ("blender" in the question pulls all six blender passages up, whatever is asked about it);
        weighting the question's tokens by how rare they are in the knowledge base lets "send it
        back" count. Only the question is weighted, so passage vectors stay per file and cacheable.
        benchmarks/retrieval.py: top-3 of the vectors alone 62% -> 71%.
        """
        n = max(1, passages)
        return np.maximum(np.log((n + 1) / (df + 0.5)), 0.05).astype(np.float32)

    def embed_query(self, text: str, weights: np.ndarray) -> np.ndarray:
        """The question's vector: its token vectors averaged with ``weights`` (see :meth:`query_weights`), unit length."""
        ids = self._ids([text])[0]
        if not ids:
            first: np.ndarray = self.embed_array([text])[0]
            return first
        vector = (self._model.embedding[ids] * weights[ids][:, None]).sum(axis=0)
        norm = float(np.linalg.norm(vector))
        unit: np.ndarray = (vector / norm if norm else vector).astype(np.float32)
        return unit

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        vectors: list[list[float]] = self.embed_array(texts).tolist()
        return vectors

    def close(self) -> None:
        pass


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


def close_embedder(embedder: Embedding | None) -> None:
    """Free an embedder's model (a GGUF's weights and context); nothing for one that holds none."""
    if isinstance(embedder, Closable):
        embedder.close()


def embed_array(embedder: Embedding, texts: Sequence[str]) -> np.ndarray:
    """The vectors of ``texts`` as a float32 matrix (one unit-length row each)."""
    if isinstance(embedder, StaticEmbedder):
        return embedder.embed_array(texts)
    rows = np.asarray(embedder.embed(list(texts)), dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True) if rows.size else rows
    return rows / np.where(norms == 0, 1, norms) if rows.size else rows.reshape(0, 0)


def query_embedder(embedder: Embedding, df: np.ndarray | None, passages: int) -> Callable[[str], np.ndarray]:
    """question -> vector: weighted by the tokens' rarity (``df``) for the static vectors, the model's own otherwise."""
    if isinstance(embedder, StaticEmbedder) and df is not None:
        weights = embedder.query_weights(df, passages)
        return lambda question: embedder.embed_query(question, weights)
    return lambda question: embed_array(embedder, [question])[0]


def embedded_text(title: str, text: str) -> str:
    """What a passage's vector is computed from: its heading path (a strong hint of its topic) and its text."""
    return f"{title}\n{text}" if title else text


def model_key(embedder: Embedding) -> str:
    """What the persistent index is keyed by besides the file: the model, down to its file's size and date."""
    if isinstance(embedder, StaticEmbedder):
        return embedder.key
    path = getattr(embedder, "path", None)
    ident = embedder.model_name
    if isinstance(path, Path):
        try:
            stat = path.stat()
            ident = f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
        except OSError:
            pass
    slug = "".join(c if c.isalnum() or c in "-._" else "-" for c in embedder.model_name)[:60]
    return f"{slug}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


def check_embed_model(spec: str | None) -> None:
    """Fail before any model loads if ``spec`` names no model (a typo in ``--embed-model``)."""
    name = (spec or STATIC).strip()
    if name.lower() not in (STATIC, NONE):
        from gptcli.models import resolve_model

        resolve_model(name)


def open_embedder(spec: str | None, settings: Settings | None = None) -> Embedding | None:
    """The dense signal named by ``--embed-model``/``embed_model``: None or 'static' is the default, 'none' is
    BM25 alone, anything else is a model (alias, REPO[:FILE] pulled, GGUF path) loaded in embedding mode.
    """
    name = (spec or STATIC).strip()
    if name.lower() == NONE:
        return None
    if name.lower() == STATIC:
        return StaticEmbedder()
    from gptcli.engines.embed import Embedder
    from gptcli.models import resolve_model

    ref = resolve_model(name)
    threads = settings.threads if settings is not None else None
    gpu_layers = settings.gpu_layers if settings is not None else 0
    return Embedder(ref.path, threads=threads, gpu_layers=gpu_layers)
