"""The thread default on an idle and on a busy machine: fixed counts against the governed default.

For each scenario (idle; ``--hogs N`` processes spinning on the CPU beside it) and each setting
(``--threads 1``, ``--threads`` = physical cores, and the default, which ``ThreadGovernor`` adjusts),
a fresh process loads the embedded model, reads a 200-token prompt and writes 96 tokens; runs
alternate between settings, medians of ``--runs``. A run that has not finished in ``--limit``
seconds is counted as collapsed.

Usage: python benchmarks/threads_bench.py [--runs 3] [--hogs 2] [--limit 60]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptcli.engines.threads import default_threads, physical_cores  # noqa: E402

CHILD = r"""
import json, sys, time
from gptcli.engines import Sampling
from gptcli.engines.local import LocalEngine
from gptcli.models import embedded_model_path
threads = int(sys.argv[1]) or None
engine = LocalEngine(embedded_model_path(), ctx=1024, threads=threads)
prompt = "Summarise this. " + " ".join(f"word{i}" for i in range(150))
usage = None
for chunk in engine.stream([{"role": "user", "content": prompt}], Sampling(temperature=0, max_tokens=96, ignore_eos=True)):
    usage = chunk.usage or usage
print(json.dumps({"tps": usage.tokens_per_second, "ttft": usage.time_to_first_token,
                  "threads_at_end": engine.governor.current if engine.governor else threads}))
"""


def hog() -> None:
    while True:
        pass


def run(threads: int, limit: float) -> dict[str, float] | None:
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], capture_output=True, text=True, timeout=limit, check=True).stdout
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=physical_cores())
    parser.add_argument("--limit", type=float, default=60.0)
    args = parser.parse_args()
    cores = physical_cores()
    settings = [("1 thread", 1), (f"{cores} threads (fixed)", cores), (f"default ({default_threads()}, governed)", 0)]
    print(f"Machine: {cores} physical cores, {os.cpu_count()} CPUs; load average at the start {os.getloadavg()[0]:.1f}\n")
    print("| machine | threads | tokens/s | first token | threads at the end |\n| --- | --- | ---: | ---: | ---: |")
    for scenario in ("idle", f"busy ({args.hogs} spinning processes)"):
        hogs = [multiprocessing.Process(target=hog, daemon=True) for _ in range(args.hogs if scenario != "idle" else 0)]
        for h in hogs:
            h.start()
        results: dict[str, list[dict[str, float] | None]] = {name: [] for name, _ in settings}
        try:
            for _ in range(args.runs):
                for name, threads in settings:
                    results[name].append(run(threads, args.limit))
        finally:
            for h in hogs:
                h.terminate()
        for name, _ in settings:
            done = [r for r in results[name] if r]
            collapsed = len(results[name]) - len(done)
            if not done:
                print(f"| {scenario} | {name} | did not finish in {args.limit:.0f} s ({collapsed} of {len(results[name])}) | | |")
                continue
            note = f" ({collapsed} of {len(results[name])} did not finish in {args.limit:.0f} s)" if collapsed else ""
            tps = statistics.median(r["tps"] for r in done)
            ttft = statistics.median(r["ttft"] for r in done)
            end = statistics.median(r["threads_at_end"] or 0 for r in done)
            print(f"| {scenario} | {name} | {tps:.1f}{note} | {ttft:.2f} s | {end:g} |")


if __name__ == "__main__":
    main()
