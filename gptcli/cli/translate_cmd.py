"""``gptcli translate``: whole documents of any length, structure kept, finished chunks never lost."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, Optional

import typer

from gptcli.cli.app import AppState, app, state
from gptcli.cli.completion import complete_language, complete_template
from gptcli.cli.options import GenOptions, generation_options
from gptcli.engines import Batching, choose, sampling_from
from gptcli.errors import GptcliError, InputError, TemplateError, UsageError
from gptcli.progress import DocumentProgress
from gptcli.render import Env, write_event
from gptcli.textio import plural

if TYPE_CHECKING:
    from gptcli.translate import ChunkResult, DocChunk, Plan, Summary

STDIN = "-"
TRUSTED_MIN = 0.8  # below this share of pieces passing every check, a document is no translation to hand over


@dataclass
class Source:
    """One input: its name, its text, and how its bytes were encoded (kept for the output file)."""

    name: str
    text: str
    codec: str  # utf-8 | utf-16-le | utf-16-be
    bom: bool
    path: Path | None = None


def _read_source(st: AppState, name: str, encoding: Optional[str]) -> Source:
    from gptcli.textio import bom_codec, decode_text, read_bytes, read_stream_bytes

    if name == STDIN:
        data = read_stream_bytes(st.env.stdin)  # bounded by max_input_mb
        label, path = "standard input", None
    else:
        path = Path(name)
        data = read_bytes(path)
        label = name
    text = decode_text(data, label, encoding)
    codec = None if encoding else bom_codec(data)
    return Source(label, text, codec or "utf-8", codec is not None, path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _outputs(names: list[str], output: Optional[str], output_dir: Optional[str], force: bool) -> list[Optional[Path]]:
    """Where each input's translation goes (None: standard output), checked before any work."""
    if output and output_dir:
        raise UsageError("use -o FILE or --output-dir DIR, not both")
    if len(names) > 1 and output:
        raise UsageError("-o takes one input file; for several files use --output-dir DIR")
    if len(names) > 1 and not output_dir:
        raise UsageError("translating several files needs --output-dir DIR")
    if names.count(STDIN) > 1:
        raise UsageError("standard input ('-') can be read only once")
    targets: list[Optional[Path]] = []
    for name in names:
        if output:
            targets.append(Path(output))
        elif output_dir:
            if name == STDIN:
                raise UsageError("standard input has no file name: use -o FILE for it")
            targets.append(Path(output_dir) / Path(name).name)
        else:
            targets.append(None)
    seen: dict[Path, str] = {}
    for name, target in zip(names, targets):
        if target is None:
            continue
        key = target.resolve()
        if key in seen:
            raise UsageError(f"{seen[key]} and {name} would both be written to {target}")
        seen[key] = name
        if name != STDIN and _same_file(Path(name), target):
            raise UsageError(f"the output {target} is the input file itself; choose another -o or --output-dir")
        if target.is_dir():
            raise InputError(f"the output {target} is a directory")
        if target.exists() and not force:
            raise InputError(f"{target} already exists: use --force to overwrite it")
        if output and not target.parent.is_dir():
            raise InputError(f"cannot write {target}: the folder {target.parent} does not exist")
    return targets


def _encoding_for(source: Source) -> str:
    return source.codec if source.codec.startswith("utf-16") else "utf-8"


def _summary_line(name: str, target: Optional[Path], summary: "Summary") -> str:
    where = f"{name} -> {target}" if target else name
    cached = f" ({summary.cached} from the cache)" if summary.cached else ""
    speed = f", {summary.tokens_per_second:.1f} tok/s" if summary.completion_tokens else ""
    trusted = f"; {summary.trusted_share:.0%} of {summary.pieces} pieces trusted" if summary.pieces else ""
    return (
        f"translated {where}: {plural(summary.chunks, 'chunk')}{cached}, {plural(summary.completion_tokens, 'token')}"
        f" in {summary.seconds:.1f} s{speed}{trusted}"
    )


def _warnings(summary: "Summary") -> list[str]:
    notes = []
    if summary.kept_source:
        failed = ", ".join(f"{name} {summary.pieces - passed}" for name, passed in summary.checks_passed().items() if passed < summary.pieces)
        notes.append(
            f"warning: {summary.kept_source} of {summary.pieces} pieces were kept in the source language:"
            f" their replies failed the checks twice ({failed})"
        )
    if summary.truncated:
        notes.append(f"warning: {plural(summary.truncated, 'reply', 'replies')} {'was' if summary.truncated == 1 else 'were'} cut at the length limit")
    if summary.looped:
        notes.append(f"warning: {plural(summary.looped, 'reply', 'replies')} began repeating {'itself and was' if summary.looped == 1 else 'themselves and were'} cut there")
    for term, count in summary.glossary_misses.most_common(5):
        notes.append(f"glossary: the translation of '{term}' is missing from {plural(count, 'chunk')}")
    return notes


@app.command()
@generation_options(
    leave_out=("plain", "no_history", "no_loop_guard"),  # no Markdown, no history; translate checks loops itself
    help={
        "stats": "Print a summary line with tokens/s on stderr.",
        "no_stream": "Print the translation when it is complete.",
        "json": "JSON lines: a start event per file, an event per finished chunk, then a summary.",
    },
    output_panel="Output",
)
def translate(
    ctx: typer.Context,
    files: Annotated[
        Optional[list[str]],
        typer.Argument(help="Files to translate; '-' (or none, with piped input) reads standard input.", metavar="FILE"),
    ] = None,
    to: Annotated[Optional[str], typer.Option("--to", help="Target language: a code or a name (fr, French, zh-CN).", autocompletion=complete_language)] = None,
    from_: Annotated[
        Optional[str], typer.Option("--from", help="Source language (default: auto, the model recognises it).", autocompletion=complete_language)
    ] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the translation to this file.")] = None,
    output_dir: Annotated[
        Optional[str], typer.Option("--output-dir", help="Write each translation into this folder, under the input's name.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
    glossary: Annotated[
        Optional[str], typer.Option("--glossary", help="CSV or TOML file of term pairs the translation must use.", metavar="FILE")
    ] = None,
    template: Annotated[Optional[str], typer.Option("--template", "-t", help="Translation template to use.", autocompletion=complete_template)] = None,
    register: Annotated[
        Optional[str], typer.Option("--register", help="Register of the translation: formal, informal... (default: as the source).")
    ] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value (repeatable).", metavar="KEY=VALUE")] = None,
    encoding: Annotated[
        Optional[str], typer.Option("--encoding", help="Encoding of the input (default: UTF-8, or UTF-16 with a BOM).")
    ] = None,
    text_format: Annotated[
        Optional[str], typer.Option("--format", help="Input format: markdown, text, or auto (by suffix and content).")
    ] = None,
    parallel: Annotated[
        Optional[int],
        typer.Option(
            "--parallel", "-P", help="Chunks translated at once (default: up to 4 on the local engine, 1 on a remote one).", min=1, max=64
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume/--no-resume", help="Reuse chunks finished by an earlier run (default) or translate all again.")
    ] = True,
    chunk_tokens: Annotated[
        Optional[int], typer.Option("--chunk-tokens", help="Most source tokens in one chunk (default 384, less if the context is small).", min=8)
    ] = None,
    strict: Annotated[
        bool,
        typer.Option("--strict", help=f"Exit 1 when under {TRUSTED_MIN:.0%} of a document's pieces pass the checks (the output is still written)."),
    ] = False,
    gen: GenOptions = GenOptions(),
) -> None:
    """Translate documents of any length, keeping their structure; resumable.

    Markdown headings, lists, tables and code blocks, line endings and the final newline are
    kept; code, front matter and URLs are never sent to the model. Finished chunks are cached, so
    running the same command again after Ctrl-C translates only what is left.

    Each piece's reply is checked (language, length, added structure, numbers, code and links); one that fails is
    sent once more, then keeps the source text, and the summary says what share
    of the document is trusted.

    Example: gptcli translate README.md --to fr -o README.fr.md
    """
    from gptcli.languages import AUTO, resolve_language
    from gptcli.models import demo_notice
    from gptcli.templates import load_template, parse_vars

    st = state(ctx)
    env = st.env
    if not to:
        raise UsageError("--to LANG is required (for example --to fr or --to German)")
    target = resolve_language(to, option="--to")
    source_lang = resolve_language(from_, option="--from", allow_auto=True) if from_ else AUTO
    if text_format not in (None, "auto", "markdown", "md", "text", "txt"):
        raise UsageError("--format must be markdown, text or auto")

    names = list(files or [])
    if not names:
        if env.stdin_isatty:
            raise UsageError("give a FILE to translate, or pipe text into gptcli translate")
        names = [STDIN]
    targets = _outputs(names, output, output_dir, force)

    # the template and its values, checked before anything is read or loaded
    tmpl = load_template(template or "translate")
    declared = {v.name for v in tmpl.variables}
    if "target" not in declared:
        raise TemplateError(f"template '{tmpl.name}' has no {{target}} variable, so it cannot name the target language")
    values = {
        "target": target.name,
        "source": "the language it is written in" if source_lang is AUTO else source_lang.name,
    }
    if register:
        if "register" not in declared:
            raise TemplateError(f"template '{tmpl.name}' has no {{register}} variable for --register")
        values["register"] = register
    values = {k: v for k, v in values.items() if k in declared}
    values.update(parse_vars(var))
    if glossary and "glossary" not in declared:
        raise TemplateError(f"template '{tmpl.name}' has no {{glossary}} variable, so --glossary terms cannot reach it")
    tmpl.values({k: v for k, v in values.items()})  # unknown or missing variables fail here

    from gptcli.translate import Glossary, Job, TranslationCache, Translator, cache_folder, load_glossary, looks_like_markdown

    terms = load_glossary(glossary) if glossary else Glossary()
    sources = [_read_source(st, name, encoding) for name in names]
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)

    settings = gen.settings(st.settings)
    engine = choose.open_engine(settings)
    if parallel is None:
        # a batching engine (the local one) decodes several chunks at once, as memory allows; others get one at a time
        parallel = engine.auto_parallel() if isinstance(engine, Batching) else 1
    sampling = sampling_from(settings, tmpl.temperature, None, edits=True)
    model_id = "|".join(str(x) for x in (engine.model_name, getattr(engine, "path", ""), settings.engine, settings.base_url or ""))
    job = Job(
        target=target,
        source=source_lang,
        template=tmpl,
        values=values,
        glossary=terms,
        sampling=sampling,
        model=model_id,
        max_tokens=settings.max_tokens if settings.sources.get("max_tokens") != "default" else None,
    )
    cache: Optional[TranslationCache] = None
    try:
        cache = TranslationCache(cache_folder(), job.key)
    except InputError as exc:  # an unwritable data folder: translate anyway, without resuming
        env.notice(f"{exc}: finished chunks are not kept for resuming")
    translator = Translator(engine, job, cache=cache, resume=resume, parallel=parallel)
    if (note := demo_notice(engine.model_name, "translate")) is not None:
        env.notice(note)
    untrusted: list[str] = []
    try:
        for src, dest in zip(sources, targets):
            markdown = (
                text_format in ("markdown", "md")
                if text_format not in (None, "auto")
                else looks_like_markdown(src.text, src.path.name if src.path else None)
            )
            code = _translate_one(st, gen, translator, src, dest, markdown, chunk_tokens, target.spaceless, untrusted)
            if code:
                raise typer.Exit(code)
        if cache is not None and cache.write_error:  # a full data folder: translated all the same
            env.notice(f"warning: {cache.write_error}; finished chunks were not all kept for resuming")
        if strict and untrusted:
            raise GptcliError(
                f"{', '.join(untrusted)}: under {TRUSTED_MIN:.0%} of the pieces passed the checks (--strict); the output was written"
            )
    finally:
        if cache is not None:
            cache.close()


def _translate_one(
    st: AppState,
    gen: GenOptions,
    translator: Any,
    src: Source,
    dest: Optional[Path],
    markdown: bool,
    chunk_tokens: Optional[int],
    spaceless: bool,
    untrusted: list[str],
) -> int:
    """Translate one document to ``dest`` (None: standard output); returns the exit code."""
    from gptcli.textio import AtomicTextFile

    env = st.env
    if not src.text:
        env.notice(f"{src.name} is empty: nothing to translate")
    plan = translator.plan(src.text, markdown=markdown, chunk_tokens=chunk_tokens) if src.text else None
    if plan is not None and not plan.chunks and src.text.strip():
        env.notice(f"{src.name} has nothing to translate (only code, numbers or blank lines): copied as it is")

    out_file: Optional[AtomicTextFile] = None
    collected: list[str] = []
    if dest is not None:
        out_file = AtomicTextFile(dest, encoding=_encoding_for(src), bom=src.bom)
    sink: Optional[IO[str]]
    if out_file is not None:
        sink = out_file  # type: ignore[assignment]
    elif gen.json:
        sink = None
    else:
        sink = env.stdout
    # the text being written is shown when chunks go one at a time (a document of one chunk always does)
    one_at_a_time = translator.parallel == 1 or (plan is not None and len(plan.chunks) <= 1)
    summary = None
    try:
        with DocumentProgress(env, src.name, sink, stream=not gen.no_stream, preview=one_at_a_time) as display:

            def write(text: str) -> None:
                if gen.json and dest is None:
                    collected.append(text)
                display.write(text)

            if plan is not None:
                events = _Events(display, env if gen.json else None, src.name)
                summary = translator.run(plan, write, events, spaceless=spaceless)
    except BaseException as exc:
        if out_file is not None:
            out_file.discard()
        if not isinstance(exc, KeyboardInterrupt):
            raise
        env.notice(f"interrupted: the finished chunks of {src.name} are kept; run the same command again to translate the rest")
        return 130
    if out_file is not None:
        out_file.commit()
    if gen.json:
        event: dict[str, Any] = {"type": "done", "file": src.name, "output": str(dest) if dest else None}
        if dest is None:
            event["text"] = "".join(collected)
        if summary is not None:
            event.update(_summary_fields(summary))
        write_event(env.stdout, event)
    elif summary is not None:
        if dest is not None or gen.stats:
            line = _summary_line(src.name, dest, summary)
            if gen.stats:
                env.err_console.print(line, style="dim", markup=False, highlight=False, soft_wrap=True)
            else:
                env.notice(line)
        for note in _warnings(summary):
            env.notice(note)
    if summary is not None and summary.trusted_share < TRUSTED_MIN:
        from gptcli.models import better_model

        untrusted.append(src.name)
        env.notice(
            f"{1 - summary.trusted_share:.0%} of the pieces of {src.name} are not translations (kept in the source language):"
            f" the model is too small for this job; try {better_model()}"
        )
    return 0


def _summary_fields(summary: "Summary") -> dict[str, Any]:
    return {
        "chunks": summary.chunks,
        "cached": summary.cached,
        "packed": summary.packed,
        "fell_back": summary.fell_back,
        "kept_source": summary.kept_source,
        "pieces": summary.pieces,
        "checks": summary.checks_passed(),  # per check, the pieces whose (last) reply passed it
        "trusted": round(summary.trusted_share, 4),
        "retried": summary.retried,
        "truncated": summary.truncated,
        "looped": summary.looped,
        "spans_lost": summary.spans_lost,
        "source_tokens": summary.source_tokens,
        "prompt_tokens": summary.prompt_tokens,
        "cached_prompt_tokens": summary.cached_tokens,
        "completion_tokens": summary.completion_tokens,
        "seconds": round(summary.seconds, 3),
        "tokens_per_second": round(summary.tokens_per_second, 2),
    }


class _Events:
    """What the translator reports, shown by the progress display; with --json (``env``) also a
    ``start`` event and one ``chunk`` event per finished chunk (in the order they finish)."""

    def __init__(self, display: DocumentProgress, env: Optional[Env], name: str) -> None:
        self.display = display
        self.env = env
        self.name = name

    def start(self, plan: "Plan", cached: int) -> None:
        self.display.begin(len(plan.chunks), sum(c.source_tokens for c in plan.chunks), cached)
        if self.env is not None:
            write_event(self.env.stdout, {"type": "start", "file": self.name, "chunks": len(plan.chunks), "cached": cached,
                                          "source_tokens": plan.source_tokens})

    def attempt(self, index: int) -> None:
        self.display.attempt()

    def token(self, index: int, text: str) -> None:
        self.display.token(text)

    def chunk_done(self, chunk: "DocChunk", result: "ChunkResult") -> None:
        self.display.chunk_done(chunk.source_tokens, result.completion_tokens)
        if self.env is not None:
            write_event(self.env.stdout, {
                "type": "chunk", "file": self.name, "index": chunk.index, "cached": result.cached,
                "packed": result.packed, "source_tokens": chunk.source_tokens,
                "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                "translations": result.translations,
                "failed": [list(failed) for failed in result.checks],  # per piece, the checks its last reply failed (then its source was kept)
            })
