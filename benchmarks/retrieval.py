"""Retrieval benchmark for ``support --kb``: top-1/top-3 of each signal and their fusion, and index timings.

Usage: python benchmarks/retrieval.py [--embed-model SPEC ...] [--expand] [--json FILE]

The knowledge base (benchmarks/data/support_kb.md, 50 FAQ passages in the product x action shape)
and the questions (benchmarks/data/support_questions.toml, each labelled with the heading of the
passage that answers it) are fixed. A question counts as found at k when its passage is among the
first k. ``--embed-model`` adds a GGUF's pooled vectors as a dense signal (default: the embedded
chat model's, `smollm2-135m`); ``--expand`` also measures query expansion written by the chat model.
"""

from __future__ import annotations

import argparse
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
    StaticEmbedder,
    embed_array,
    open_embedder,
    query_embedder,
)
from gptcli.knowledge.index import VectorIndex
from gptcli.knowledge.ranking import DENSE_WEIGHTS, Ranker

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


def timings(embedder, folder: Path) -> dict[str, float]:
    """Seconds to load, index and rank one question over the 2,000-passage base: cold, then cached.

    In one process, so Python's start and imports (about 0.4 s for gptcli, numpy and wordllama) are left out.
    """
    paths = [str(p) for p in synthetic_base(folder / "kb")]
    cache = folder / "cache"
    out: dict[str, float] = {}
    for label in ("cold", "cached"):
        start, cpu = time.perf_counter(), time.process_time()
        files = knowledge.load_files(paths)
        index = VectorIndex(embedder, root=cache)
        vectors = index.vectors(files)
        passages = [p for f in files for p in f.passages]
        ranker = Ranker(passages, vectors, query_embedder(embedder, index.token_df, len(passages)), weights=DENSE_WEIGHTS)
        ranker.rank("I ordered a blender online last week and I want to send it back. How?")
        out[label] = time.perf_counter() - start
        out[f"{label} cpu"] = time.process_time() - cpu  # on a shared machine, wall time includes waiting
        out["passages"] = len(passages)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-model", action="append", default=None, help="a GGUF for a dense signal (repeatable)")
    parser.add_argument("--expand", action="store_true", help="also measure query expansion by the chat model")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    questions = load_questions()
    files = knowledge.load_files([str(KB)])
    passages = [p for f in files for p in f.passages]
    counts = {k: sum(q["kind"] == k for q in questions) for k in dict.fromkeys(q["kind"] for q in questions)}
    print(f"{len(passages)} passages, {len(questions)} questions ({', '.join(f'{k} {n}' for k, n in counts.items())})")
    rows: dict[str, dict[str, object]] = {}
    rows["BM25 (words)"] = evaluate(Ranker(passages, signals=("bm25",)), questions)
    rows["BM25 character 4-grams"] = evaluate(Ranker(passages, signals=("grams",)), questions)
    rows["BM25 words + 4-grams"] = evaluate(Ranker(passages, signals=("bm25", "grams")), questions)

    dense: dict[str, tuple[object, np.ndarray, float]] = {}
    static_query = None
    static = StaticEmbedder()
    specs = [s for s in (args.embed_model or ["smollm2-135m"]) if s != "none"]
    for name, embedder in [("static (wordllama)", static)] + [(f"pooled {spec}", open_embedder(spec)) for spec in specs]:
        # a GGUF's vectors are slow on a busy CPU: passages go through the persistent index and the
        # questions' vectors are kept beside it, so a rerun costs nothing
        start = time.perf_counter()
        index = VectorIndex(embedder, root=DATA / ".index")
        vectors = index.vectors(files)
        seconds = time.perf_counter() - start if index.stats.embedded else float("nan")
        dense[name] = (embedder, vectors, seconds)
        saved = index.folder / "questions.npy"
        texts = [q["text"] for q in questions]
        if saved.exists() and np.load(saved).shape[0] == len(texts):
            qv = np.load(saved)
        else:
            qv = embed_array(embedder, texts)
            np.save(saved, qv)
        lookup = {t: qv[i] for i, t in enumerate(texts)}
        query = _cached_query(embedder, lookup)
        rows[f"dense {name}"] = evaluate(Ranker(passages, vectors, query, signals=("dense",)), questions)
        if embedder is static:
            query = static_query = query_embedder(static, index.token_df, len(passages))
            rows[f"dense {name}, IDF-weighted question"] = evaluate(Ranker(passages, vectors, query, signals=("dense",)), questions)
        rows[f"fusion BM25 + dense {name}"] = evaluate(Ranker(passages, vectors, query, signals=("bm25", "dense")), questions)
        rows[f"fusion BM25 + 4-grams + dense {name}, equal weights"] = evaluate(Ranker(passages, vectors, query), questions)
        rows[f"fusion BM25 + 4-grams + dense {name}, dense x3"] = evaluate(
            Ranker(passages, vectors, query, weights=DENSE_WEIGHTS), questions
        )
        rows[f"embed {name}: seconds for {len(passages)} passages"] = {"seconds": seconds}

    if args.expand:
        texts = expansions(questions, DATA / ".expansions.json")
        rows["BM25 on expanded query"] = evaluate(Ranker(passages, signals=("bm25",)), questions, texts)
        rows["BM25 + 4-grams on expanded query"] = evaluate(Ranker(passages, signals=("bm25", "grams")), questions, texts)
        _, vectors, _ = dense["static (wordllama)"]
        rows["default fusion on expanded query"] = evaluate(
            Ranker(passages, vectors, static_query, weights=DENSE_WEIGHTS), questions, texts
        )

    with tempfile.TemporaryDirectory() as tmp:
        rows["time, 2,000 passages, static"] = timings(static, Path(tmp))

    for name, row in rows.items():
        if "top1" in row:
            kinds = " ".join(f"{k} {v:.0%}" for k, v in row["by_kind_top3"].items())
            print(f"{name:52} top-1 {row['top1']:4.0%}  top-3 {row['top3']:4.0%}  top-4 {row['top4']:4.0%}   [{kinds}]")
        else:
            print(f"{name:52} {row}")
    default = rows["fusion BM25 + 4-grams + dense static (wordllama), dense x3"]
    print("default recall at k:", " ".join(f"{k}:{v:.0%}" for k, v in default["recall"].items()))
    print("default misses (top 3):", *default["misses_top3"], sep="\n  ")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
