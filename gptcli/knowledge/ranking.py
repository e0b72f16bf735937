"""Hybrid ranking of passages: BM25 over words, BM25 over character n-grams, dense vectors, fused by standardised score or reciprocal rank."""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gptcli.knowledge.passages import Passage

_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does doing for from had has have how i if in
    into is it its me my of on or our so than that the their them then there these they this to us was
    we were what when where which who why will with would you your yours""".split()
)
GRAM = 4  # character n-gram length; on benchmarks/retrieval.py 3, 4 and 5 were within a question of each other
RRF_K = 60  # reciprocal-rank fusion constant (Cormack et al. 2009); 20 and 100 were within a question of it


def _stem(word: str) -> str:
    """A light English suffix stripper so 'refunds', 'refunded' and 'refund' meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-2]
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Search terms: lower-cased words without stop words, lightly stemmed; CJK as character bigrams."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        out.extend(_word_terms(word))
    return out


@functools.lru_cache(maxsize=65536)
def _word_terms(word: str) -> tuple[str, ...]:
    """The terms of one lower-cased word (cached: a knowledge base repeats its words a lot)."""
    if _CJK.search(word):
        out: list[str] = []
        for part in re.split(f"({_CJK.pattern})", word):
            if not part:
                continue
            if _CJK.fullmatch(part):
                out.extend(part if len(part) == 1 else [part[i : i + 2] for i in range(len(part) - 1)])
            elif part not in _STOPWORDS:
                out.append(_stem(part))
        return tuple(out)
    return () if word in _STOPWORDS else (_stem(word),)


def grams(text: str) -> list[str]:
    """Character n-grams of each word, with its edges marked: a misspelt word still shares most of them."""
    out: list[str] = []
    for word in _WORD.findall(text):
        out.extend(_word_grams(word))
    return out


@functools.lru_cache(maxsize=65536)
def _word_grams(word: str) -> tuple[str, ...]:
    # lower case without accents, so 'détartrer' and 'detartrer' share their n-grams
    word = word.lower()
    if not word.isascii():
        word = "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))
    if word in _STOPWORDS or _CJK.search(word):
        return ()  # CJK is already indexed by character pairs in terms()
    padded = f"<{word}>"
    if len(padded) <= GRAM:
        return (padded,)
    return tuple(padded[i : i + GRAM] for i in range(len(padded) - GRAM + 1))


class BM25:
    """Okapi BM25 over a fixed list of documents (each a list of terms)."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.counts = [Counter(doc) for doc in documents]
        self.lengths = [len(doc) for doc in documents]
        self.average = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        frequency: Counter[str] = Counter()
        for counts in self.counts:
            frequency.update(counts.keys())
        n = len(documents)
        self.idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}

    def scores(self, query: Iterable[str]) -> list[float]:
        unique = [t for t in set(query) if t in self.idf]
        results: list[float] = []
        for counts, length in zip(self.counts, self.lengths):
            norm = self.k1 * (1 - self.b + self.b * length / self.average) if self.average else self.k1
            score = 0.0
            for term in unique:
                tf = counts.get(term, 0)
                if tf:
                    score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            results.append(score)
        return results


@dataclass(frozen=True)
class ScoredPassage:
    """A passage with its fused score and its place in each signal's ranking (1 = best, None = not ranked)."""

    passage: Passage
    score: float
    bm25: float = 0.0
    bm25_rank: int | None = None  # None: the passage shares no word with the question
    grams_rank: int | None = None
    dense_rank: int | None = None
    similarity: float | None = None
    cut: bool = False  # only the part that matches the question is sent (it did not fit whole)


def _ranks(scores: Sequence[float], positive_only: bool) -> list[int | None]:
    """1-based rank of each score, best first (ties keep input order); None where the score is not positive."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks: list[int | None] = [None] * len(scores)
    for place, i in enumerate(order, 1):
        if not positive_only or scores[i] > 0:
            ranks[i] = place
    return ranks


SIGNALS = ("bm25", "grams", "dense")
# Each signal's weight in the reciprocal-rank fusion, used when a single dense signal is ranked
# with the lexical ones (the benchmark's rows, and ``Ranker(..., fusion="rrf")``).
DENSE_WEIGHTS = {"bm25": 1.0, "grams": 1.0, "dense": 3.0}
# The default fusion: each signal's scores standardised over the passages (z-scores); per passage,
# the larger of the two dense z-scores (WordLlama's, the multilingual encoder's), plus BM25's with
# these weights. Reciprocal ranks throw away how far ahead a signal's best passage is, which is
# what tells a confident signal (the multilingual encoder on a French question) from a lost one
# (WordLlama on it), and the larger z-score lets the confident one decide. benchmarks/retrieval.py,
# top-3 on its 48 questions: the same signals fused by RRF 65%, z-scores summed 79%, the larger
# dense z-score 81%; on the 10 German and Spanish questions written afterwards and never tuned on,
# 50%, 60%, 70%. BM25 counts a tenth: its scores are mostly zero, so a passage that shares a rare
# word (a model number, an error code) still stands out, while a common product name does not
# drown a paraphrase (at 0.1 the top-3 was unchanged, at 0.2 it lost a question). The character
# n-grams are left out (0.1 and above lost a question or two; the vectors catch the typos).
# Weights fitted on half the questions did worse on the other half than these plain ones.
SCORE_WEIGHTS = {"bm25": 0.1, "grams": 0.0, "dense": 1.0}


@dataclass(frozen=True)
class DenseSignal:
    """One dense signal: a unit-length row per passage and the function that embeds a question."""

    name: str
    vectors: np.ndarray
    embed: Callable[[str], np.ndarray]


def _standard(scores: np.ndarray) -> np.ndarray:
    """Scores as z-scores over the passages (all zero when they do not vary)."""
    spread = float(scores.std())
    return (scores - scores.mean()) / spread if spread > 1e-12 else np.zeros_like(scores)


@dataclass
class Ranker:
    """Ranks one knowledge base's passages against questions.

    ``more`` holds the dense signals (vectors per passage and the question's embedder); without
    any, only the lexical signals rank. ``signals`` picks
    which are fused (the benchmark measures each alone). ``fusion`` is "score" (z-scores summed
    with ``weights``, :data:`SCORE_WEIGHTS` by default) or "rrf" (reciprocal ranks, each weighted by
    ``weights``, 1 by default); with no dense signal the lexical ones are always fused by rank.
    """

    passages: Sequence[Passage]
    more: Sequence[DenseSignal] = ()
    signals: tuple[str, ...] = SIGNALS
    weights: dict[str, float] = field(default_factory=dict)
    fusion: str = "score"

    def __post_init__(self) -> None:
        self.dense_signals: list[DenseSignal] = list(self.more) if "dense" in self.signals else []
        if self.fusion == "score" and self.dense_signals and not self.weights:
            self.weights = dict(SCORE_WEIGHTS)
            self.signals = tuple(s for s in self.signals if s != "grams")  # weight 0: not worth computing
        self.words = BM25([terms(p.indexed_text) for p in self.passages])
        self.chars = BM25([grams(p.indexed_text) for p in self.passages]) if "grams" in self.signals else None

    @property
    def dense(self) -> bool:
        return bool(self.dense_signals)

    def rank(self, question: str) -> list[ScoredPassage]:
        """Every passage with its fused score, best first; a passage no signal ranks scores 0 (by rank fusion)."""
        n = len(self.passages)
        bm25 = self.words.scores(terms(question))
        bm25_ranks = _ranks(bm25, positive_only=True)
        grams_scores: list[float] = [0.0] * n
        grams_ranks: list[int | None] = [None] * n
        if self.chars is not None:
            grams_scores = self.chars.scores(grams(question))
            grams_ranks = _ranks(grams_scores, positive_only=True)
        dense_ranks: list[int | None] = [None] * n
        similarity: list[float | None] = [None] * n
        dense_z = np.zeros(n)
        if self.dense_signals and n:
            sims = [np.asarray(d.vectors @ np.asarray(d.embed(question), dtype=np.float32), dtype=np.float64) for d in self.dense_signals]
            # per passage, the most confident dense signal speaks: its z-score (see SCORE_WEIGHTS)
            dense_z = np.max([_standard(s) for s in sims], axis=0)
            # one dense rank for --show-sources: the dense signals' own fusion; the similarity shown is their mean cosine
            dense_ranks = _ranks(dense_z.tolist(), positive_only=False)
            similarity = (sum(sims, np.zeros(n)) / len(sims)).tolist()
        used = {
            "bm25": bm25_ranks if "bm25" in self.signals else None,
            "grams": grams_ranks if "grams" in self.signals else None,
            "dense": dense_ranks if self.dense else None,
        }
        if self.dense and self.fusion == "score":
            fused_array = self.weights.get("dense", 1.0) * dense_z
            if used["bm25"] is not None:
                fused_array = fused_array + self.weights.get("bm25", 1.0) * _standard(np.asarray(bm25, dtype=np.float64))
            if used["grams"] is not None:
                fused_array = fused_array + self.weights.get("grams", 1.0) * _standard(np.asarray(grams_scores, dtype=np.float64))
            fused = fused_array.tolist()
        else:
            fused = [0.0] * n
            for name, ranks in used.items():
                if ranks is None:
                    continue
                weight = self.weights.get(name, 1.0)
                for i, r in enumerate(ranks):
                    if r is not None:
                        fused[i] += weight / (RRF_K + r)
        scored = [
            ScoredPassage(
                self.passages[i], fused[i], bm25[i], bm25_ranks[i] if used["bm25"] else None,
                grams_ranks[i] if used["grams"] else None, dense_ranks[i] if used["dense"] else None,
                similarity[i],
            )
            for i in range(n)
        ]
        return sorted(scored, key=lambda sp: -sp.score)


def rank(passages: Sequence[Passage], question: str) -> list[ScoredPassage]:
    """Every passage ranked for the question by the lexical signals alone (BM25 words and n-grams), best first."""
    return Ranker(passages).rank(question)
