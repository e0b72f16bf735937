"""Translation throughput against the engine's raw generation speed, and peak memory as a document grows.

Usage: .venv/bin/python benchmarks/translate_bench.py [--document manual|synthetic] [--words 5000]
       [--memory-words 1250] [--ctx 2048] [--threads N] [--parallel N] [--skip-memory]

1. Speed: loads the embedded model once, measures raw generation (256 tokens, end-of-text ignored)
   before and after, and translates a 5,000-word Markdown document into French with gptcli's own
   translator, the way `gptcli translate` does (several chunks decoded at once), and again one
   chunk at a time; then the model's own rates, reading a prompt and writing several replies at
   once, give the ceiling any translator of this document could reach. The document is ``benchmarks/data/manual.md`` (the first 5,000 words of
   gptcli's README at commit 0bda55f: prose, lists, tables, code), or with ``--document synthetic``
   a generated manual of ``--words`` words of random setting words. Every request's usage is
   recorded, so the wall time splits into generation, prompt processing and gptcli's own work.
2. Memory: runs the installed `gptcli translate` with its default settings on a generated
   document and on one 4x as long, and reads each process's peak RSS.

3. Trust (``--trust``, alone: minutes, not hours): the first ``--trust-words`` words of the
   document translated into French, German and Chinese, one chunk at a time; for each, the share
   of pieces whose reply passed each check (``gptcli.translate.checks``) and the share trusted,
   and prompt tokens per source token (sent, and evaluated: not reused from the KV cache). Also,
   without the model, what the language check says of the document's pieces given back
   untranslated (each should fail) and of the same pieces into English (each should pass).

Prints a Markdown report (for benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANUAL = ROOT / "benchmarks" / "data" / "manual.md"
sys.path.insert(0, str(ROOT))

from gptcli.config import load_settings  # noqa: E402
from gptcli.engines import Engine, Message, Sampling, choose  # noqa: E402
from gptcli.languages import resolve_language  # noqa: E402
from gptcli.templates import load_template  # noqa: E402
from gptcli.translate import ChunkResult, Glossary, Job, TranslationCache, Translator, SPAN_PATTERN, plan_document  # noqa: E402
from gptcli.translate.checks import CHECKS, Checker  # noqa: E402
from tests.fakes import RecordingEngine, collect  # noqa: E402  (the usage-recording wrapper the translation tests use too)

WORDS = (
    "system user file setting option server network device window report value process memory "
    "folder account service update version backup message address program install network support "
    "change check start stop open close read write create delete copy move search find show hide "
    "simple quick small large main new old first last next other every each local remote secure"
).split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice([".", ".", ".", "?", "!"])


def make_document(words: int, seed: int = 7) -> str:
    """A Markdown manual of about ``words`` words: sections of paragraphs, lists, tables and code."""
    rng = random.Random(seed)
    out: list[str] = []
    count = 0
    section = 0
    while count < words:
        section += 1
        title = f"{'#' * rng.choice([1, 2, 2, 3])} {section}. {sentence(rng)[:-1]}"
        out += [title, ""]
        count += len(title.split())
        for _ in range(rng.randint(2, 4)):
            paragraph = " ".join(sentence(rng) for _ in range(rng.randint(2, 6)))
            out += [paragraph, ""]
            count += len(paragraph.split())
        kind = rng.choice(["list", "table", "code", "none"])
        if kind == "list":
            for _ in range(rng.randint(3, 5)):
                item = f"- {sentence(rng)}"
                out.append(item)
                count += len(item.split())
            out.append("")
        elif kind == "table":
            out += ["| Option | Meaning | Default |", "| --- | --- | --- |"]
            for _ in range(rng.randint(2, 4)):
                row = f"| `{rng.choice(WORDS)}` | {sentence(rng)} | {rng.randint(1, 999)} |"
                out.append(row)
                count += len(row.split())
            out.append("")
        elif kind == "code":
            out += ["```bash", f"gptcli {rng.choice(WORDS)} --{rng.choice(WORDS)} {rng.randint(1, 99)}", "```", ""]
    return "\n".join(out)


def raw_speed(engine: Engine, tokens: int = 256) -> float:
    """Generation tokens/s of a plain reply (prompt processing excluded), end-of-text ignored."""
    messages: list[Message] = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    _, usage = collect(engine.stream(messages, Sampling(temperature=0.2, max_tokens=tokens, seed=1, ignore_eos=True)))
    assert usage is not None
    return usage.tokens_per_second


def engine_rates(engine: Engine, n: int, document: str) -> tuple[float, float]:
    """What the model itself does in a batched context of ``n`` sequences, as the translation runs
    it: tokens/s reading a prompt (350 words of ``document``, nothing cached), and tokens/s
    writing ``n`` replies at once (256 tokens each, end-of-text ignored, prompts excluded)."""
    inner = engine.parallel(n, 2048)  # type: ignore[attr-defined]
    try:
        words = document.split()
        prompt = " ".join(words[len(words) // 2 :][:350])  # about 500 tokens no cache of its holds
        _, usage = collect(inner.complete(prompt, Sampling(temperature=0.2, max_tokens=1, seed=1)))
        assert usage is not None
        reading = (usage.prompt_tokens - usage.cached_tokens) / usage.time_to_first_token
        sampling = Sampling(temperature=0.2, max_tokens=256, seed=1, ignore_eos=True)
        replies = [inner.stream([{"role": "user", "content": f"Write a long story about lighthouse keeper {i}."}], sampling) for i in range(n)]
        usages = []
        for reply in replies:
            last = None
            for chunk in reply:
                last = chunk.usage or last
            usages.append(last)
        window = max(u.total_time for u in usages) - max(u.time_to_first_token for u in usages)
        writing = (sum(u.completion_tokens for u in usages) - n) / window
    finally:
        inner.close()
    return reading, writing


class Kept:
    """Events that keep each chunk's final translation (to count the tokens of the result)."""

    def __init__(self) -> None:
        self.translations: list[str] = []

    def start(self, plan: object, cached: int) -> None:
        pass

    def attempt(self, index: int) -> None:
        pass

    def token(self, index: int, text: str) -> None:
        pass

    def chunk_done(self, chunk: object, result: ChunkResult) -> None:
        self.translations.extend(result.translations)


class NoChecks(Checker):
    """Passes every reply: the translator as it was before the checks (``--no-checks``, for a before/after)."""

    def failed(self, source: str, reply: str) -> tuple[str, ...]:
        return ()


def translate(engine: RecordingEngine, job: Job, document: str, parallel: int, checks: bool = True) -> dict[str, float]:
    """Translate ``document`` with ``parallel`` chunks at once; the figures of that run.

    Throughput counts the tokens of the translation that was kept (what a reader gets), not
    those of attempts the translator threw away (a chunk that came back broken and was sent again
    paragraph by paragraph).
    """
    engine.usages.clear()
    kept = Kept()
    with tempfile.TemporaryDirectory() as folder:
        cache = TranslationCache(Path(folder), job.key)
        checker = None if checks else NoChecks(job.target.code, "en")
        translator = Translator(engine, job, cache=cache, resume=False, parallel=parallel, checker=checker)
        started = time.perf_counter()
        plan = translator.plan(document, markdown=True)
        planned = time.perf_counter()
        parts: list[str] = []
        summary = translator.run(plan, parts.append, kept)
        wall = time.perf_counter() - started
        cache.close()
    usages = engine.usages
    output = sum(engine.tokenize_count(text) for text in kept.translations)
    # the source's inline code, link targets and URLs in the translation: put back, not generated
    spans = {span for chunk in plan.chunks for atom in chunk.atoms for span in SPAN_PATTERN.findall(atom.text)}
    restored = sum(engine.tokenize_count(span) for text in kept.translations for span in SPAN_PATTERN.findall(text) if span in spans)
    generation = sum(u.total_time - u.time_to_first_token for u in usages)
    prompt = sum(u.time_to_first_token for u in usages)
    completion = sum(u.completion_tokens for u in usages)
    return {
        "parallel": parallel,
        "chunks": len(plan.chunks),
        "requests": len(usages),
        "packed": summary.packed,
        "fell_back": summary.fell_back,
        "looped": summary.looped,
        "truncated": summary.truncated,
        "spans_lost": summary.spans_lost,
        "pieces": summary.pieces,
        "trusted": summary.trusted_share,
        "kept_source": summary.kept_source,
        "retried": summary.retried,
        **{f"pass_{name}": summary.passed[name] / summary.pieces if summary.pieces else 1.0 for name in CHECKS},
        "source": summary.source_tokens,
        "span_pieces": sum(bool(SPAN_PATTERN.search(atom.text)) for chunk in plan.chunks for atom in chunk.atoms),
        "completion": completion,
        "prompt_tokens": sum(u.prompt_tokens for u in usages),
        "cached_tokens": sum(u.cached_tokens for u in usages),
        "wall": wall,
        "plan": planned - started,
        "generation": generation,
        "prompt": prompt,
        "overhead": wall - generation - prompt,
        "output": output,
        "restored": restored,
        "translation": output / wall,
        "generated_rate": completion / wall,
        "decode_during": (completion - len(usages)) / generation if generation else 0.0,
    }


def speed(document: str, ctx: int, threads: int | None, parallel: int | None = None) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Raw generation before and after; ``document`` translated as `gptcli translate` does by
    default (several chunks decoded at once), and one chunk at a time."""
    settings = load_settings().with_flags(ctx=ctx, threads=threads)
    engine = RecordingEngine(choose.open_engine(settings))
    raw_before = statistics.median(raw_speed(engine.inner) for _ in range(3))
    template = load_template("translate")
    job = Job(
        target=resolve_language("fr"),
        source=resolve_language("en"),
        template=template,
        values={"target": "French", "source": "English"},
        glossary=Glossary(),
        sampling=Sampling(temperature=template.temperature or 0.2, seed=1),
        model="bench",
    )
    n = parallel or engine.inner.auto_parallel()  # type: ignore[attr-defined]
    batched = translate(engine, job, document, n)
    serial = translate(engine, job, document, 1)
    reading, writing = engine_rates(engine.inner, n, document)
    raw_after = statistics.median(raw_speed(engine.inner) for _ in range(3))
    raw = (raw_before + raw_after) / 2
    for run in (batched, serial):
        run["ratio"] = run["translation"] / raw
        run["generated_ratio"] = run["generated_rate"] / raw
        run["written_ratio"] = (run["output"] - run["restored"]) / run["wall"] / raw
        # a translator that wasted nothing: this run's prompt tokens read, and only the kept
        # tokens written (not those put back), at the model's own rates (n at once, or one at a time)
        write = writing if run is batched else raw
        read_s = (run["prompt_tokens"] - run["cached_tokens"]) / reading
        run["ceiling"] = run["output"] / (read_s + (run["output"] - run["restored"]) / write)
        run["ceiling_ratio"] = run["ceiling"] / raw
        run["of_ceiling"] = run["translation"] / run["ceiling"]
        run["prompt_per_source"] = run["prompt_tokens"] / run["source"]
        run["evaluated_per_source"] = (run["prompt_tokens"] - run["cached_tokens"]) / run["source"]
    info = {
        "words": len(document.split()),
        "source_tokens": engine.tokenize_count(document),
        "raw": raw,
        "raw_before": raw_before,
        "raw_after": raw_after,
        "reading": reading,
        "writing": writing,
    }
    return info, batched, serial


def job_for(code: str) -> Job:
    template = load_template("translate")
    target = resolve_language(code)
    return Job(
        target=target,
        source=resolve_language("en"),
        template=template,
        values={"target": target.name, "source": "English"},
        glossary=Glossary(),
        sampling=Sampling(temperature=template.temperature or 0.2, seed=1),
        model="bench",
    )


def first_words(document: str, words: int) -> str:
    """The document's first blocks up to about ``words`` words (cut at a blank line)."""
    out, count = [], 0
    for block in document.split("\n\n"):
        if count >= words:
            break
        out.append(block)
        count += len(block.split())
    return "\n\n".join(out) + "\n"


def language_check_on_untranslated(document: str) -> dict[str, tuple[int, int]]:
    """Per target, of the document's pieces given back as they are: (pieces, failed the language check)."""
    plan = plan_document(document, lambda text: len(text.split()), 384)
    atoms = [atom.text for chunk in plan.chunks for atom in chunk.atoms]
    found = {}
    for code in ("fr", "de", "zh", "en"):
        checker = Checker(code, "en")
        # "So, " first: an English reply that is not the source word for word, so the identifier decides
        verdicts = [checker.failed(text, "So, " + text) for text in atoms]
        found[code] = (len(atoms), sum("language" in v for v in verdicts))
    return found


def trust(document: str, words: int, ctx: int, threads: int | None, checks: bool = True) -> list[dict[str, float]]:
    """The first ``words`` words of ``document`` into French, German and Chinese, one chunk at a time."""
    settings = load_settings().with_flags(ctx=ctx, threads=threads)
    engine = RecordingEngine(choose.open_engine(settings))
    part = first_words(document, words)
    runs = []
    for code in ("fr", "de", "zh"):
        run = translate(engine, job_for(code), part, 1, checks)
        run["language"] = code  # type: ignore[assignment]
        run["prompt_per_source"] = run["prompt_tokens"] / run["source"]
        run["evaluated_per_source"] = (run["prompt_tokens"] - run["cached_tokens"]) / run["source"]
        runs.append(run)
    return runs


def print_trust(runs: list[dict[str, float]], words: int, untranslated: dict[str, tuple[int, int]], checks: bool = True) -> None:
    off = "" if checks else " (--no-checks: every reply passes, as before the checks)"
    print(f"## Trust: the first {words} words of benchmarks/data/manual.md, embedded SmolLM2-135M, one chunk at a time{off}\n")
    print("| target | pieces | " + " | ".join(f"pass {name}" for name in CHECKS) + " | trusted | retried (passed) | kept source | prompt tokens / source token (sent / evaluated) | wall (s) |")
    print("| --- " * (7 + len(CHECKS)) + "|")
    for run in runs:
        print(f"| {run['language']} | {run['pieces']:.0f} | " + " | ".join(f"{100 * run[f'pass_{name}']:.0f} %" for name in CHECKS)
              + f" | **{100 * run['trusted']:.0f} %** | {run['retried']:.0f} ({run['retried'] - run['kept_source']:.0f})"
              + f" | {run['kept_source']:.0f}"
              + f" | {run['prompt_per_source']:.1f} / {run['evaluated_per_source']:.1f} | {run['wall']:.0f} |")
    print("\nThe language check on the whole manual's pieces given back in English, each prefixed with \"So, \" (no model):\n")
    print("| target | pieces | failed the language check |")
    print("| --- | --- | --- |")
    for code, (pieces, failed) in untranslated.items():
        print(f"| {code} | {pieces} | {failed} ({100 * failed / pieces:.0f} %) |")


def peak_rss(document: Path, ctx: int, home: Path, threads: int | None) -> tuple[float, float]:
    """Peak RSS (MiB) and seconds of `gptcli translate` on ``document``, default settings."""
    exe = Path(sys.executable).parent / "gptcli"
    env = dict(os.environ, GPTCLI_HOME=str(home))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "translate", str(document), "--to", "fr", "-o", str(document) + ".fr", "--force",
         "--no-resume", "--ctx", str(ctx), *(["--threads", str(threads)] if threads else [])],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"gptcli translate failed: {proc.stderr.read().decode() if proc.stderr else status}")
    return usage.ru_maxrss / 1024, seconds


def memory(words: int, ctx: int, threads: int | None) -> list[tuple[str, int, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        base = Path(folder)
        for label, factor in (("1x", 1), ("4x", 4)):
            path = base / f"doc-{label}.md"
            text = make_document(words * factor, seed=11)
            path.write_text(text)
            rss, seconds = peak_rss(path, ctx, base / f"home-{label}", threads)
            rows.append((label, len(text.split()), rss, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--document", choices=("manual", "synthetic"), default="manual")
    parser.add_argument("--words", type=int, default=5000, help="the synthetic document's length")
    parser.add_argument("--memory-words", type=int, default=1250, help="the smaller memory document's length (the other: 4x)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parallel", type=int, default=None, help="chunks at once (default: as gptcli translate)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--trust", action="store_true", help="only the trust report (checks per language, prompt tokens)")
    parser.add_argument("--trust-words", type=int, default=300)
    parser.add_argument("--no-checks", action="store_true", help="with --trust: every reply passes (the translator before its checks)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # nothing lost if the process dies at exit
    os.environ.setdefault("GPTCLI_HOME", tempfile.mkdtemp(prefix="gptcli-bench-"))
    if args.trust:
        document = MANUAL.read_text(encoding="utf-8")
        runs = trust(document, args.trust_words, args.ctx, args.threads, not args.no_checks)
        print_trust(runs, args.trust_words, language_check_on_untranslated(document), not args.no_checks)
        return

    # memory first: a child's peak RSS counts what it inherited at fork, so the model must not be
    # loaded here yet
    rows = [] if args.skip_memory else memory(args.memory_words, args.ctx, args.threads)
    document = MANUAL.read_text(encoding="utf-8") if args.document == "manual" else make_document(args.words)
    info, batched, serial = speed(document, args.ctx, args.threads, args.parallel)
    cpu = platform.processor() or platform.machine()
    runs = (batched, serial)
    name = "benchmarks/data/manual.md" if args.document == "manual" else "a generated manual"
    print(f"## Translation throughput ({name}: {info['words']:,} words, {info['source_tokens']:,} tokens;"
          f" embedded SmolLM2-135M Q4_1, --ctx {args.ctx}, {os.cpu_count()} CPUs, {cpu})\n")
    print(f"| measure | default: {batched['parallel']} chunks at once | one chunk at a time |")
    print("| --- | --- | --- |")

    def row(label: str, fmt: str, key: str) -> None:
        print(f"| {label} | " + " | ".join(fmt.format(run[key]) for run in runs) + " |")

    row("chunks", "{:.0f}", "chunks")
    row("requests (chunks whole, or one per paragraph, item or row)", "{:.0f}", "requests")
    row("whole chunks whose structure came back broken (then sent piece by piece)", "{:.0f}", "fell_back")
    row("replies cut where they began repeating themselves", "{:.0f}", "looped")
    row("replies cut at the length limit", "{:.0f}", "truncated")
    print("| pieces with inline code, a link or a URL / whose reply lost a placeholder | "
          + " | ".join(f"{run['span_pieces']:.0f} / {run['spans_lost']:.0f}" for run in runs) + " |")
    row("tokens generated, all requests", "{:,.0f}", "completion")
    row("tokens of the translation kept", "{:,.0f}", "output")
    row("- of which the source's inline code, link targets and URLs, put back (not generated)", "{:,.0f}", "restored")
    row("prompt tokens", "{:,.0f}", "prompt_tokens")
    row("- of which reused from the KV cache", "{:,.0f}", "cached_tokens")
    row("prompt tokens per source token: sent", "{:.1f}", "prompt_per_source")
    row("prompt tokens per source token: evaluated (not reused from the KV cache)", "{:.1f}", "evaluated_per_source")
    row("pieces / trusted (passed every check)", "{:.0f}", "pieces")
    print("| - trusted | " + " | ".join(f"{100 * run['trusted']:.0f} %" for run in runs) + " |")
    row("wall time (s)", "{:.1f}", "wall")
    print(f"| - model reading prompts (s) | (overlaps generation) | {serial['prompt']:.1f} ({100 * serial['prompt'] / serial['wall']:.0f} %) |")
    print(f"| - model generating (s) | (overlaps reading) | {serial['generation']:.1f} ({100 * serial['generation'] / serial['wall']:.0f} %) |")
    print(f"| - gptcli's own work: planning, checks, cache, reassembly (s) | | {serial['overhead']:.2f} ({100 * serial['overhead'] / serial['wall']:.1f} %) |")
    print(f"| raw generation, one reply of 256 tokens, before / after (tok/s) | {info['raw_before']:.1f} / {info['raw_after']:.1f} | |")
    print("| tokens generated per second of the whole run | " + " | ".join(f"{run['generated_rate']:.1f} = {run['generated_ratio']:.2f}x raw" for run in runs) + " |")
    print("| **translation, end to end (kept tokens/s)** | " + " | ".join(f"**{run['translation']:.1f} = {run['ratio']:.2f}x raw**" for run in runs) + " |")
    print("| - the kept tokens the model wrote (those put back not counted) | " + " | ".join(f"{(run['output'] - run['restored']) / run['wall']:.1f} = {run['written_ratio']:.2f}x raw" for run in runs) + " |")
    print(f"| the model reading a prompt / writing {batched['parallel']} replies at once (tok/s) | {info['reading']:.0f} / {info['writing']:.0f} | |")
    print("| ceiling: the prompt tokens read at that rate, only the kept tokens not put back written (kept tokens/s) | "
          + " | ".join(f"{run['ceiling']:.1f} = {run['ceiling_ratio']:.2f}x raw" for run in runs) + " |")
    print("| translation / ceiling | " + " | ".join(f"{run['of_ceiling']:.2f}" for run in runs) + " |")
    if rows:
        print("\n## Peak memory (`gptcli translate`, default settings, generated documents)\n")
        print("| document | words | peak RSS | time |")
        print("| --- | --- | --- | --- |")
        for label, words, rss, seconds in rows:
            print(f"| {label} | {words:,} | {rss:.0f} MiB | {seconds:.0f} s |")
        print(f"\nGrowth from 1x to 4x: {rows[1][2] - rows[0][2]:+.1f} MiB.")


if __name__ == "__main__":
    main()
