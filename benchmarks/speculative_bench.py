"""Speculative decoding's speed: tokens/s of the same replies with and without drafts, as ratios in one run.

Runs alternate (without, with, without, ...) so a machine whose load changes treats both alike;
medians are reported, and the ratio is the median of each round's pair (a run with drafts over
the run without just before it), so a drift of the machine's speed between rounds cancels. Prints a Markdown table (paste it into benchmarks/README.md).

    python benchmarks/speculative_bench.py [--rounds 3] [--tokens 256] [--translate] [--llama-bench PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptcli.engines import Message, Sampling
from gptcli.engines.local import LocalEngine
from gptcli.models import embedded_model_path
from gptcli.templates import load_template
from tests.fakes import collect

DATA = ROOT / "benchmarks" / "data"


def cases(translate: bool) -> dict[str, list[Message]]:
    text = (DATA / "proofread.txt").read_text()
    found: dict[str, list[Message]] = {
        "proofread": load_template("proofread").render(text, {}),
        "rewrite": load_template("rewrite").render(text, {}),
        "story": [{"role": "user", "content": "Write a long story about a lighthouse keeper who finds a cat on the rocks."}],
        # the ceiling: a reply that copies its input (what a model that proofreads well writes;
        # SmolLM2-135M's proofread is closer to a paraphrase)
        "copy": [{"role": "system", "content": "Repeat the user's message exactly as it is, word for word."}, {"role": "user", "content": text}],
    }
    if translate:  # the first chunk of the manual, as `translate` would send it
        manual = (DATA / "manual.md").read_text()[:2000]
        found["translate"] = load_template("translate").render(manual, {"target": "French"})
    return found


def run(engine: LocalEngine, messages: list[Message], sampling: Sampling) -> tuple[str, float, int, int, int]:
    text, usage = collect(engine.stream(messages, sampling))
    assert usage is not None
    return text, usage.tokens_per_second, usage.completion_tokens, usage.draft_tokens, usage.accepted_tokens


def llama_bench_tg(binary: str, model: str, n: int, threads: int) -> float:
    out = subprocess.run(
        [binary, "-m", model, "-t", str(threads), "-r", "3", "-p", "0", "-n", str(n), "-o", "json"],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="runs with and without drafts, each")
    parser.add_argument("--tokens", type=int, default=256, help="most tokens a reply")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: governed, as gptcli runs)")
    parser.add_argument("--translate", action="store_true", help="also the first chunk of benchmarks/data/manual.md into French")
    parser.add_argument("--llama-bench", help="llama-bench binary (benchmarks/build_llama_bench.sh) for native tg")
    parser.add_argument("--model", default=None, help="GGUF (default: the embedded SmolLM2-135M)")
    parser.add_argument("--draft-model", default=None, help="a draft model for the target")
    args = parser.parse_args()

    model = Path(args.model) if args.model else embedded_model_path()
    draft = Path(args.draft_model) if args.draft_model else None
    engine = LocalEngine(model, ctx=4096, threads=args.threads, draft_model=draft)
    load = os.getloadavg()[0]
    print(f"model {model.name}, {os.cpu_count()} CPUs, load average {load:.1f} at the start", file=sys.stderr)
    rows = []
    for name, messages in cases(args.translate).items():
        base = Sampling(temperature=0, max_tokens=args.tokens)
        speeds: dict[bool, list[float]] = {False: [], True: []}
        texts: dict[bool, list[str]] = {False: [], True: []}
        drafted = accepted = tokens = 0
        run(engine, messages, dataclasses.replace(base, max_tokens=1, speculative=False))  # the prompt into the cache
        for _ in range(args.rounds):
            for spec in (False, True):
                text, speed, n, d, a = run(engine, messages, dataclasses.replace(base, speculative=spec))
                speeds[spec].append(speed)
                texts[spec].append(text)
                if spec:
                    drafted, accepted, tokens = drafted + d, accepted + a, tokens + n
                print(f"  {name} {'with' if spec else 'without'}: {speed:.1f} tok/s, {n} tokens, {a}/{d} drafted taken", file=sys.stderr, flush=True)
        off, on = statistics.median(speeds[False]), statistics.median(speeds[True])
        ratio = statistics.median(b / a for a, b in zip(speeds[False], speeds[True]))
        same = sum(a == b for a, b in zip(texts[False], texts[True]))
        rows.append(
            (name, f"{off:.1f}", f"{on:.1f}", f"{ratio:.2f}x", f"{accepted / drafted:.0%}" if drafted else "-",
             f"{accepted / tokens:.0%}" if tokens else "-", f"{same}/{args.rounds}")
        )
    print("| reply | tok/s without | tok/s with | ratio | drafted tokens taken | reply tokens from drafts | same bytes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    if args.llama_bench:
        tg = llama_bench_tg(args.llama_bench, str(model), args.tokens, args.threads or engine.threads)
        print(f"\nllama-bench tg{args.tokens}: {tg:.1f} tok/s")
    print(f"\nload average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; {time.strftime('%Y-%m-%d %H:%M')}")
    engine.close()


if __name__ == "__main__":
    main()
