"""The engine settings gptcli's defaults come from: flash attention, batch size and threads.

Usage: .venv/bin/python benchmarks/sweep.py [--runs 3]

For each combination it loads the embedded model in gptcli's own engine and measures generation
(tg128: 128 tokens after the first, on an empty context; tg64 1,024 tokens into the context) and
prompt processing (pp512), median of ``--runs``. Run it on
an otherwise idle machine; it prints a Markdown table (for benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import engine_pp, engine_tg  # noqa: E402

from gptcli.engines import Sampling  # noqa: E402

from gptcli.engines.threads import physical_cores  # noqa: E402
from gptcli.engines.local import LocalEngine, release_engines  # noqa: E402
from gptcli.models import embedded_model_path  # noqa: E402


def tg_at_depth(engine: LocalEngine, depth: int, n: int = 64) -> float:
    """Generation speed ``depth`` tokens into the context (a long chat, a long reply)."""
    prompt = [engine.bos] + [1000 + (i * 7) % 20000 for i in range(depth - 1)]
    engine.forget(0)
    engine.prefill(prompt)
    usage = None
    for chunk in engine.generate(prompt, Sampling(temperature=0.7, max_tokens=n, seed=1, ignore_eos=True)):
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == n
    return (n - 1) / (usage.total_time - usage.time_to_first_token)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cores = physical_cores()
    threads = sorted({1, cores, os.cpu_count() or cores})
    print(f"Machine: {platform.machine()}, {cores} physical cores, {os.cpu_count()} CPUs;"
          f" load average {os.getloadavg()[0]:.1f} at the start; median of {args.runs}.\n")
    print("| flash attention | batch | threads | tg128 tokens/s | tg64 1,024 tokens in | pp512 tokens/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    combos = [(flash, batch, cores) for flash, batch in itertools.product((True, False), (256, 512, 1024))]
    combos += [(flash, 512, n) for flash in (True, False) for n in threads if n != cores]
    for flash, batch, n in combos:
        release_engines()
        engine = LocalEngine(embedded_model_path(), ctx=4096, threads=n, flash_attn=flash, batch_size=batch)
        try:
            engine_tg(engine, 16)  # warm-up
            tg = statistics.median(engine_tg(engine, 128) for _ in range(args.runs))
            deep = statistics.median(tg_at_depth(engine, 1024) for _ in range(args.runs))
            pp = statistics.median(engine_pp(engine, 512) for _ in range(args.runs))
        finally:
            engine.close()
        print(f"| {'on' if flash else 'off'} | {batch} | {n} | {tg:.1f} | {deep:.1f} | {pp:.1f} |", flush=True)


if __name__ == "__main__":
    main()
