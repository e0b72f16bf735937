"""Knowledge-base grounding for ``support --kb``: passages, hybrid ranking, the persistent index, fitting the context."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from gptcli.knowledge.grounding import (
    MAX_PASSAGES,
    NO_MATCH,
    Grounding,
    format_passage,
    ground,
    matching_part,
    reply_reserve,
    sources_report,
)
from gptcli.knowledge.passages import (
    KbFile,
    Passage,
    kb_files,
    load_files,
    load_passages,
    split_passages,
)
from gptcli.knowledge.ranking import (
    BM25,
    DENSE_WEIGHTS,
    SCORE_WEIGHTS,
    SIGNALS,
    DenseSignal,
    Ranker,
    ScoredPassage,
    grams,
    rank,
    terms,
)

if TYPE_CHECKING:
    from gptcli.config import Settings
    from gptcli.engines import Embedding


def build_ranker(
    files: Sequence[KbFile],
    embedder: Embedding | None,
    notice: Callable[[str], None] | None = None,
) -> Ranker:
    """A ranker over the files' passages: the lexical signals, plus the dense one when there is an embedder.

    Passage vectors come from the persistent index (computed once per file content and model).
    """
    passages = [p for f in files for p in f.passages]
    if embedder is None:
        return Ranker(passages)
    from gptcli.knowledge.dense import DefaultEmbedders, query_embedder
    from gptcli.knowledge.index import VectorIndex

    signals = []
    for part in embedder.parts if isinstance(embedder, DefaultEmbedders) else (embedder,):
        index = VectorIndex(part, notice=notice)
        vectors = index.vectors(files)
        signals.append(DenseSignal(part.model_name, vectors, query_embedder(part, index.token_df, len(passages))))
    return Ranker(passages, more=signals)


def close_embedder(embedder: Embedding | None) -> None:
    """Free an embedder's model once the passages are ranked."""
    from gptcli.knowledge.dense import close_embedder as _close

    _close(embedder)


def check_embed_model(spec: str | None) -> None:
    """Fail before any model loads if ``spec`` names no model."""
    from gptcli.knowledge.dense import check_embed_model as _check

    _check(spec)


def open_embedder(spec: str | None, settings: Settings | None = None) -> Embedding | None:
    """See :func:`gptcli.knowledge.dense.open_embedder` (imported lazily: it loads numpy and wordllama)."""
    from gptcli.knowledge.dense import open_embedder as _open

    return _open(spec, settings)


__all__ = [
    "BM25",
    "DENSE_WEIGHTS",
    "MAX_PASSAGES",
    "NO_MATCH",
    "SCORE_WEIGHTS",
    "SIGNALS",
    "DenseSignal",
    "Grounding",
    "KbFile",
    "Passage",
    "Ranker",
    "ScoredPassage",
    "build_ranker",
    "check_embed_model",
    "close_embedder",
    "format_passage",
    "grams",
    "ground",
    "kb_files",
    "load_files",
    "load_passages",
    "matching_part",
    "open_embedder",
    "rank",
    "reply_reserve",
    "sources_report",
    "split_passages",
    "terms",
]
