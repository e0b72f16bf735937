"""gptcli's engine on a GPU beside llama-bench on the same model: tg128, tg1024 (default sampler,
greedy, and host sampling instead of backend sampling), pp512, pp2048.

Usage: python benchmarks/gpu_bench.py MODEL.gguf LLAMA_BENCH [GPU_LAYERS]   (-1 = all layers, the default)

Made for ../shared/gpu's recipe (a CUDA build of llama.cpp loaded through LLAMA_CPP_LIB_PATH): run it
there instead of the recipe's engine_bench.py, which calls the engine's old private names. Public API only.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gptcli.engines import Sampling
from gptcli.engines.local import LocalEngine


def tg(engine: LocalEngine, n: int, *, greedy: bool = False) -> float:
    usage = None
    engine.forget(0)
    sampling = Sampling(temperature=0 if greedy else 0.7, max_tokens=n, seed=1, ignore_eos=True)
    for chunk in engine.complete("Once upon a time", sampling):
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == n, usage
    return (n - 1) / (usage.total_time - usage.time_to_first_token)  # as llama-bench: after the first token


def pp(engine: LocalEngine, n: int) -> float:
    tokens = [engine.bos] + [1000 + (i * 7) % 20000 for i in range(n - 1)]
    times = []
    for _ in range(3):
        engine.forget(0)
        t = time.perf_counter()
        engine.prefill(tokens)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def native(bench: str, model: str, layers: int, args: list[str], fa: str) -> float:
    out = subprocess.run(
        [bench, "-m", model, "-ngl", "99" if layers else "0", "-fa", fa, "-r", "3", "-o", "json", *args],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def main() -> None:
    model, bench = sys.argv[1], sys.argv[2]
    layers = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    for what, n in (("tg", 128), ("tg", 1024), ("pp", 512), ("pp", 2048)):
        engine = LocalEngine(Path(model), gpu_layers=layers, fit=n + 8)
        fa = "1" if engine.flash_attn else "0"
        if what == "tg":
            tg(engine, 16)  # warm-up
            ours = statistics.median(tg(engine, n) for _ in range(3))
            greedy = statistics.median(tg(engine, n, greedy=True) for _ in range(3))
            engine.offload_sampling = False
            host = statistics.median(tg(engine, n) for _ in range(3))
            theirs = native(bench, model, layers, ["-p", "0", "-n", str(n)], fa)
            print(
                f"tg{n}: gptcli {ours:.1f} t/s (greedy {greedy:.1f}, host sampling {host:.1f}),"
                f" llama-bench {theirs:.1f} t/s, {ours / theirs:.2f}x (fa={fa}, layers={layers})",
                flush=True,
            )
        else:
            pp(engine, 64)
            ours = statistics.median(pp(engine, n) for _ in range(3))
            theirs = native(bench, model, layers, ["-p", str(n), "-n", "0"], fa)
            print(f"pp{n}: gptcli {ours:.1f} t/s, llama-bench {theirs:.1f} t/s, {ours / theirs:.2f}x (fa={fa}, layers={layers})", flush=True)
        engine.close()


if __name__ == "__main__":
    main()
