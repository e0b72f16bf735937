"""Structured output with the embedded SmolLM2-135M: the triage template with and without llama.cpp's grammar.

Three measurements on the 50 customer messages of ``benchmarks/data/customer_messages.txt``:

1. Validity: each message triaged once with the grammar and once without (seed = message index,
   the template's temperature 0.2). Both runs see the same prompt, the triage template's with the
   JSON Schema appended to its system prompt, so the only difference is the grammar. Counted: the
   share of replies that parse as JSON, and the share that parse *and* validate against the schema.
   These runs go through the batched engine (4 sequences), which changes nothing in a reply's tokens.
2. Cost of the grammar: ``--speed`` messages generated one at a time on the plain local engine, with
   and without the grammar, alternating message by message; generation tokens/s (first token
   excluded) summed over the runs, and the ratio. The grammar is checked lazily (the drawn token
   against the grammar alone; the whole vocabulary only when it is refused); the sampler chain
   alone is also timed (100 samples on one prompt's logits, with and without the grammar), which
   load on the machine disturbs less.
3. Batch mode: ``gptcli ask -t triage --each-line`` over all 50 messages (one process, one model
   load, the batched engine) against separate ``gptcli ask -t triage`` processes, one per message
   (``--processes`` of them, run one after another; the per-message time is scaled to 50 when
   fewer are run). Wall time, messages per minute.

Usage: .venv/bin/python benchmarks/structured_bench.py [--messages 50] [--speed 10] [--processes 50] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GPTCLI = str(Path(sys.executable).parent / "gptcli")
MESSAGES = ROOT / "benchmarks" / "data" / "customer_messages.txt"


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--speed", type=int, default=10, help="messages for the tokens/s comparison")
    parser.add_argument("--processes", type=int, default=50, help="separate processes run (scaled to --messages)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: sampler,validity,speed,batch")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from gptcli.engines import Sampling
    from gptcli.engines.local import LocalEngine
    from gptcli.models import embedded_model_path
    from gptcli.schema import Structure, check_reply, dump
    from gptcli.templates import load_template

    template = load_template("triage")
    assert template.schema is not None
    messages_text = MESSAGES.read_text(encoding="utf-8").splitlines()[: args.messages]
    structure = Structure(schema=template.schema)
    values = template.values({})

    def prompt(text: str) -> list:
        msgs = template.render(text, values)
        msgs[0] = {"role": "system", "content": msgs[0]["content"] + "\n\nThe JSON Schema of the record:\n" + dump(template.schema, pretty=False)}
        return msgs

    base = Sampling(temperature=template.temperature or 0.2, max_tokens=template.max_tokens or 200)
    free = base
    constrained = structure.sampling(base, local=True)
    print(f"load average at start: {load_average()}", flush=True)
    engine = LocalEngine(embedded_model_path(), ctx=2048, **({"threads": args.threads} if args.threads else {}))
    results: dict[str, object] = {"messages": len(messages_text), "load_start": load_average()}

    def verdict(text: str) -> tuple[bool, bool]:
        try:
            json.loads(text, strict=False)
        except ValueError:
            return False, False
        try:
            check_reply(text, template.schema)
        except Exception:
            return True, False
        return True, True

    if "sampler" not in skip:
        # the sampler chain alone, on the logits of one evaluated prompt: what the grammar adds per token
        # (the chain the engine builds, through the llama layer, applied to its last logits)
        for _ in engine.stream(prompt(messages_text[0]), Sampling(max_tokens=1, seed=1)):
            pass
        timings = {}
        for label, sampling in (("grammar", constrained), ("free", free)):
            calls = 0
            spent = 0.0
            for round_ in range(20):
                sampler = engine.model.sampler(sampling, round_)
                started = time.perf_counter()
                for _ in range(5):  # the grammar advances with each accepted token, as in a reply
                    sampler.sample(engine.context)
                spent += time.perf_counter() - started
                calls += 5
                sampler.free()
            timings[label] = spent / calls * 1000
        results["sampler_ms"] = {k: round(v, 2) for k, v in timings.items()}
        print(f"sampler per token: grammar {timings['grammar']:.1f} ms, free {timings['free']:.2f} ms", flush=True)

    if "validity" not in skip:
        for label, sampling in (("grammar", constrained), ("free", free)):
            started = time.perf_counter()
            batched = engine.parallel(4, 1024)
            streams = []
            for i, text in enumerate(messages_text):
                s = Sampling(**{**sampling.__dict__, "seed": i})
                streams.append(batched.stream(prompt(text), s))
            parsed = valid = tokens = cut = 0
            for stream in streams:  # read in order on this (the driving) thread: the others advance too
                parts, usage = [], None
                for chunk in stream:
                    parts.append(chunk.text)
                    usage = chunk.usage or usage
                ok_parse, ok_valid = verdict("".join(parts))
                parsed += ok_parse
                valid += ok_valid
                tokens += usage.completion_tokens if usage else 0
                cut += bool(usage and usage.finish_reason == "length")
            batched.close()
            seconds = time.perf_counter() - started
            n = len(messages_text)
            results[f"validity_{label}"] = {"parsed": parsed, "valid": valid, "n": n, "tokens": tokens, "length_cut": cut, "seconds": round(seconds, 1)}
            print(f"{label:8s} parse {parsed}/{n} ({parsed / n:.0%})  parse+validate {valid}/{n} ({valid / n:.0%})"
                  f"  cut at the limit {cut}  {tokens} tokens in {seconds:.0f} s", flush=True)

    if "speed" not in skip:
        # alternating, message by message (grammar then free on the same message and seed), so the
        # machine's load drifting during the run weighs on both sides alike
        spent = {"grammar": 0.0, "free": 0.0}
        counted = {"grammar": 0, "free": 0}
        for i, text in enumerate(messages_text[: args.speed]):
            for label, sampling in (("grammar", constrained), ("free", free)):
                s = Sampling(**{**sampling.__dict__, "seed": 100 + i})
                usage = None
                for chunk in engine.stream(prompt(text), s):
                    usage = chunk.usage or usage
                assert usage is not None
                spent[label] += usage.total_time - usage.time_to_first_token
                counted[label] += max(0, usage.completion_tokens - 1)
        for label in ("grammar", "free"):
            gen_time, gen_tokens = spent[label], counted[label]
            rate = gen_tokens / gen_time if gen_time else 0.0
            results[f"speed_{label}"] = {"tokens": gen_tokens, "seconds": round(gen_time, 2), "tokens_per_second": round(rate, 2)}
            print(f"{label:8s} {gen_tokens} tokens in {gen_time:.1f} s: {rate:.1f} tok/s ({1000 / rate if rate else 0:.0f} ms a token)", flush=True)
        g, f = results["speed_grammar"]["tokens_per_second"], results["speed_free"]["tokens_per_second"]  # type: ignore[index]
        if f:
            results["speed_ratio"] = round(g / f, 3)
            print(f"grammar / free tokens/s: {g / f:.2f}", flush=True)
    engine.close()

    if "batch" not in skip:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "GPTCLI_HOME": home}
            if args.threads:
                env["GPTCLI_THREADS"] = str(args.threads)
            started = time.perf_counter()
            proc = subprocess.run(
                [GPTCLI, "ask", "-t", "triage", "--each-line", "--no-history", "--seed", "1"],
                input="\n".join(messages_text) + "\n", capture_output=True, text=True, env=env,
            )
            batch_s = time.perf_counter() - started
            lines = proc.stdout.splitlines()
            print(f"--each-line: {len(lines)} lines (exit {proc.returncode}) in {batch_s:.0f} s", flush=True)
            count = min(args.processes, len(messages_text))
            started = time.perf_counter()
            ok = 0
            for text in messages_text[:count]:
                one = subprocess.run([GPTCLI, "ask", "-t", "triage", "--no-history", "--seed", "1", text], capture_output=True, text=True, env=env)
                ok += one.returncode == 0
            per = (time.perf_counter() - started) / count
            total = per * len(messages_text)
            results["batch"] = {
                "each_line_seconds": round(batch_s, 1), "each_line_lines": len(lines), "each_line_exit": proc.returncode,
                "processes_run": count, "processes_ok": ok, "seconds_per_process": round(per, 2), "processes_seconds_for_all": round(total, 1),
                "speedup": round(total / batch_s, 2),
            }
            print(f"separate processes: {count} run ({ok} ok), {per:.1f} s each, {total:.0f} s for {len(messages_text)}"
                  f" -> --each-line is {total / batch_s:.2f}x faster", flush=True)
    results["load_end"] = load_average()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
