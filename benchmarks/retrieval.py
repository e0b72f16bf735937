"""Retrieval benchmark for ``support --kb``: top-1/top-3 of each signal and their fusion, and index timings.

Usage: python benchmarks/retrieval.py [--embed-model SPEC ...] [--expand] [--json FILE]

The knowledge base (benchmarks/data/support_kb.md, 51 FAQ passages in the product x action shape)
and the questions (benchmarks/data/support_questions.toml, each labelled with the heading of the
passage that answers it) are fixed. A question counts as found at k when its passage is among the
first k. The 48 synonym, typo, French and e-mail questions are the ones the signals and weights
were chosen on ("tuned"); the 10 German and Spanish ones were written afterwards and never tuned
on, the 15 "fresh" ones after the passage-text change (dense.embedded_text) was chosen. ``--embed-model`` adds a GGUF's pooled vectors as a dense signal (e.g. the embedded chat
model's, `smollm2-135m`: about 4 minutes on a busy 2-core machine); ``--expand`` also measures
query expansion written by the chat model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptcli import knowledge
from gptcli.knowledge.dense import (
    MultilingualEmbedder,
    StaticEmbedder,
    embed_array,
    open_embedder,
    query_embedder,
)
from gptcli.knowledge.index import VectorIndex
from gptcli.knowledge.ranking import DENSE_WEIGHTS, DenseSignal, Ranker

DATA = ROOT / "benchmarks" / "data"
KB = DATA / "support_kb.md"
QUESTIONS = DATA / "support_questions.toml"
EXPAND_PROMPT = (
    "Rewrite this customer message as a short search query in English for a help-centre FAQ. "
    "Fix spelling, translate it to English if needed, and add two or three synonyms of its key words. "
    "Write only the query.\n\nMessage: {q}\n\nQuery:"
)


def _cached_query(embedder, lookup: dict[str, np.ndarray]):
    return lambda q: lookup[q] if q in lookup else embed_array(embedder, [q])[0]


def load_questions() -> list[dict[str, str]]:
    return tomllib.loads(QUESTIONS.read_text(encoding="utf-8"))["question"]


def position(ranked: list[knowledge.ScoredPassage], answer: str) -> int | None:
    for i, sp in enumerate(ranked, 1):
        if sp.passage.title.endswith(answer):
            return i
    return None


def evaluate(ranker: Ranker, questions: list[dict[str, str]], texts: list[str] | None = None) -> dict[str, object]:
    positions: list[int | None] = []
    kinds: dict[str, list[int | None]] = defaultdict(list)
    for i, q in enumerate(questions):
        pos = position(ranker.rank(texts[i] if texts else q["text"]), q["answer"])
        positions.append(pos)
        kinds[q["kind"]].append(pos)

    def at(ps: list[int | None], k: int) -> float:
        return sum(1 for p in ps if p is not None and p <= k) / len(ps)

    return {
        "top1": at(positions, 1),
        "top3": at(positions, 3),
        "top4": at(positions, 4),
        "tuned_top3": at([p for q, p in zip(questions, positions) if q["kind"] in TUNED], 3),
        "recall": {k: at(positions, k) for k in range(1, 9)},
        "by_kind_top3": {kind: at(ps, 3) for kind, ps in kinds.items()},
        "misses_top3": [q["text"][:60] for q, p in zip(questions, positions) if p is None or p > 3],
    }


def expansions(questions: list[dict[str, str]], cache: Path) -> list[str]:
    """The chat model's rewrite of each question (greedy), appended to the question; cached in ``cache``."""
    if cache.exists():
        saved = json.loads(cache.read_text())
        if len(saved) == len(questions):
            return saved
    from gptcli.engines import Sampling
    from gptcli.engines.local import load_local_engine
    from gptcli.models import embedded_model_path

    engine = load_local_engine(embedded_model_path(), ctx=1024)
    out = []
    for q in questions:
        messages = [{"role": "user", "content": EXPAND_PROMPT.format(q=q["text"])}]
        text = "".join(c.text for c in engine.stream(messages, Sampling(temperature=0.0, max_tokens=40)) if c.text)
        out.append(q["text"] + "\n" + text.strip())
    cache.write_text(json.dumps(out, ensure_ascii=False, indent=1))
    return out


def synthetic_base(folder: Path, copies: int = 40) -> list[Path]:
    """A 2,000-passage base: the FAQ 40 times over, each copy for another product line (so no file repeats)."""
    text = KB.read_text(encoding="utf-8")
    paths = []
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(copies):
        path = folder / f"line{i:02}.md"
        path.write_text(text.replace("Acme", f"Acme Series {i}").replace("euros", f"euros (line {i})"), encoding="utf-8")
        paths.append(path)
    return paths


def timings(folder: Path) -> dict[str, float]:
    """Seconds to load, index and rank one question over the 2,000-passage base with the default signals: cold, then cached.

    In one process, so Python's start and imports (about 0.4 s for gptcli, numpy and wordllama) are
    left out; each run opens the embedders anew (what a ``support`` call does).
    """
    paths = [str(p) for p in synthetic_base(folder / "kb")]
    out: dict[str, float] = {}
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder / "cache")  # cold means the encoder's weight copy too
    try:
        for label in ("cold", "cached"):
            start, cpu = time.perf_counter(), time.process_time()
            files = knowledge.load_files(paths)
            embedder = open_embedder(None)
            ranker = knowledge.build_ranker(files, embedder)
            ranker.rank("I ordered a blender online last week and I want to send it back. How?")
            out[label] = time.perf_counter() - start
            out[f"{label} cpu"] = time.process_time() - cpu  # on a shared machine, wall time includes waiting
            out["passages"] = len(ranker.passages)
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old
    return out


TUNED = ("synonym", "typo", "french", "email")  # the questions the signals and weights were chosen on


def held_out(signals: dict[str, np.ndarray], questions: list[dict[str, str]], gold: list[int], splits: int = 25) -> dict[str, float]:
    """Top-3 of weights fitted on half of the tuned questions, on the other half, against the default's on the same halves.

    ``signals`` holds each signal's scores (questions x passages). The fitted fusion is the default's
    form (z-scores, the larger of the two dense ones) with a weight per signal from a small grid.
    """
    z = {k: (v - v.mean(1, keepdims=True)) / np.maximum(v.std(1, keepdims=True), 1e-12) for k, v in signals.items()}
    grid = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
    kinds = np.array([q["kind"] for q in questions])
    target = np.array(gold)

    def fused(w: tuple[float, ...]) -> np.ndarray:
        return np.maximum(w[2] * z["wordllama"], w[3] * z["use"]) + w[0] * z["bm25"] + w[1] * z["grams"]

    def top3(f: np.ndarray, rows: np.ndarray) -> float:
        g = f[rows, target[rows]][:, None]
        return float(((f[rows] > g).sum(1) + 1 <= 3).mean())

    combos = {w: fused(w) for w in itertools.product(grid, grid, [1.0], grid) if w[3] or w[2]}
    default = fused((0.1, 0.0, 1.0, 1.0))
    fitted, plain = [], []
    for seed in range(splits):
        rng = np.random.default_rng(seed)
        a: list[int] = []
        b: list[int] = []
        for kind in TUNED:
            rows = np.flatnonzero(kinds == kind)
            rng.shuffle(rows)
            a += rows[::2].tolist()
            b += rows[1::2].tolist()
        for train, test in ((np.array(a), np.array(b)), (np.array(b), np.array(a))):
            best = max(combos, key=lambda w: (top3(combos[w], train), -sum(w)))
            fitted.append(top3(combos[best], test))
            plain.append(top3(default, test))
    return {"fitted on one half, top-3 on the other": float(np.mean(fitted)), "default on the same halves": float(np.mean(plain))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-model", action="append", default=None, help="a GGUF for a dense signal (repeatable)")
    parser.add_argument("--expand", action="store_true", help="also measure query expansion by the chat model")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    questions = load_questions()
    files = knowledge.load_files([str(KB)])
    passages = [p for f in files for p in f.passages]
    gold = [next(i for i, p in enumerate(passages) if p.title.endswith(q["answer"])) for q in questions]
    counts = {k: sum(q["kind"] == k for q in questions) for k in dict.fromkeys(q["kind"] for q in questions)}
    print(f"{len(passages)} passages, {len(questions)} questions ({', '.join(f'{k} {n}' for k, n in counts.items())})")
    rows: dict[str, dict[str, object]] = {}
    rows["BM25 (words)"] = evaluate(Ranker(passages, signals=("bm25",)), questions)
    rows["BM25 character 4-grams"] = evaluate(Ranker(passages, signals=("grams",)), questions)
    rows["BM25 words + 4-grams (RRF; --embed-model none)"] = evaluate(Ranker(passages, signals=("bm25", "grams")), questions)

    # each dense model's passage vectors go through the persistent index and its questions' vectors
    # are kept beside it, so a rerun costs nothing (a GGUF's are slow on a busy CPU)
    texts = [q["text"] for q in questions]
    dense: dict[str, DenseSignal] = {}
    static = StaticEmbedder()
    multilingual = MultilingualEmbedder()
    specs = [s for s in (args.embed_model or []) if s != "none"]
    for name, embedder in [("wordllama", static), ("use", multilingual)] + [(f"pooled {spec}", open_embedder(spec)) for spec in specs]:
        start = time.perf_counter()
        index = VectorIndex(embedder, root=DATA / ".index")
        vectors = index.vectors(files)
        seconds = time.perf_counter() - start if index.stats.embedded else float("nan")
        saved = index.folder / "questions.npy"
        if saved.exists() and np.load(saved).shape[0] == len(texts):
            qv = np.load(saved)
        else:
            qv = embed_array(embedder, texts)
            np.save(saved, qv)
        lookup = {t: qv[i] for i, t in enumerate(texts)}
        query = _cached_query(embedder, lookup)
        if embedder is static:
            rows["WordLlama alone, plain average"] = evaluate(Ranker(passages, [DenseSignal(name, vectors, query)], signals=("dense",)), questions)
            query = query_embedder(static, index.token_df, len(passages))
        dense[name] = DenseSignal(name, vectors, query)
        rows[f"{name} alone"] = evaluate(Ranker(passages, more=[dense[name]], signals=("dense",)), questions)
        rows[f"embed {name}: seconds for {len(passages)} passages"] = {"seconds": seconds}
        if name.startswith("pooled"):
            rows[f"{name} + BM25 (default fusion)"] = evaluate(Ranker(passages, more=[dense[name]]), questions)

    wl, use = dense["wordllama"], dense["use"]
    rows["before: BM25 + 4-grams + WordLlama x3 (RRF)"] = evaluate(
        Ranker(passages, [wl], weights=DENSE_WEIGHTS, fusion="rrf"), questions
    )
    rows["BM25 + 4-grams + WordLlama + USE (RRF)"] = evaluate(Ranker(passages, more=[wl, use], fusion="rrf"), questions)
    rows["WordLlama + USE, larger z-score"] = evaluate(Ranker(passages, more=[wl, use], signals=("dense",)), questions)
    default_ranker = Ranker(passages, more=[wl, use])
    rows["default: WordLlama + USE larger z + BM25 x0.1"] = evaluate(default_ranker, questions)

    scores = {
        "bm25": np.array([default_ranker.words.scores(knowledge.terms(t)) for t in texts]),
        "grams": np.array([Ranker(passages, signals=("grams",)).chars.scores(knowledge.grams(t)) for t in texts]),  # type: ignore[union-attr]
        "wordllama": np.array([wl.vectors @ wl.embed(t) for t in texts]),
        "use": np.array([use.vectors @ use.embed(t) for t in texts]),
    }
    rows["held-out check"] = held_out(scores, questions, gold)

    if args.expand:
        expanded = expansions(questions, DATA / ".expansions.json")
        rows["BM25 on expanded query"] = evaluate(Ranker(passages, signals=("bm25",)), questions, expanded)
        rows["default on expanded query"] = evaluate(
            Ranker(passages, more=[DenseSignal("wordllama", wl.vectors, wl.embed), DenseSignal("use", use.vectors, lambda q: embed_array(multilingual, [q])[0])]),
            questions,
            expanded,
        )

    with tempfile.TemporaryDirectory() as tmp:
        rows["time, 2,000 passages, default"] = timings(Path(tmp))

    for name, row in rows.items():
        if "top1" in row:
            kinds = " ".join(f"{k} {v:.0%}" for k, v in row["by_kind_top3"].items())
            print(f"{name:48} top-1 {row['top1']:4.0%}  top-3 {row['top3']:4.0%}  (tuned {row['tuned_top3']:4.0%})  [{kinds}]")
        else:
            print(f"{name:48} {row}")
    default = rows["default: WordLlama + USE larger z + BM25 x0.1"]
    print("default recall at k:", " ".join(f"{k}:{v:.0%}" for k, v in default["recall"].items()))
    print("default misses (top 3):", *default["misses_top3"], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
