"""Writing commands: ``support``, ``summarize``, ``rewrite``, ``proofread``, ``reply`` and ``complete``."""

import dataclasses
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gptcli.cli.app import AppState, app, state
from gptcli.cli.completion import complete_template
from gptcli.cli.options import GenOptions, generation_options
from gptcli.cli.run import output_mode, read_material, run_template
from gptcli.cli.structured import StructOptions, structured_options
from gptcli.engines import Engine, Message, Sampling, choose, sampling_from
from gptcli.errors import InputError, TemplateError, UsageError
from gptcli.templates import Template

if TYPE_CHECKING:
    from gptcli.knowledge import Grounding

FileOption = Annotated[Optional[str], typer.Option("--file", "-f", help="Read the text from a file instead of stdin ('-' is stdin).")]


def _show_sources(st: AppState, gen: GenOptions, grounding: "Grounding") -> None:
    """``--show-sources``: a ``sources`` JSON event with --json, else a list on stderr."""
    from gptcli import knowledge
    from gptcli.render import write_event

    records = knowledge.sources_report(grounding)
    if gen.json:
        write_event(
            st.env.stdout,
            {
                "type": "sources",
                "passages": records,
                "total_passages": grounding.total_passages,
                "ranked": grounding.ranked,
                "signals": list(grounding.signals),
            }
        )
        return
    signals = " + ".join("BM25" if s == "bm25" else "4-grams" if s == "grams" else "dense" for s in grounding.signals)
    lines = [f"sources: {len(records)} of {grounding.total_passages} passages, the most relevant by {signals}"]
    for record in records:
        title = f" ({record['title']})" if record["title"] else ""
        ranks = "  ".join(
            f"{label} " + (f"#{record[key]}" if record[key] is not None else "-")
            for label, key, signal in (("bm25", "bm25_rank", "bm25"), ("dense", "dense_rank", "dense"))
            if signal in grounding.signals
        )
        cut = "  (cut to the part that matches)" if record["cut"] else ""
        lines.append(f"  [{record['number']}] {record['source']}:{record['line']}{title}  {ranks}{cut}")
    if not records:
        lines.append("  (no passage matches the question)")
    st.env.stderr.write("\n".join(lines) + "\n")
    st.env.stderr.flush()


@app.command()
@generation_options
@structured_options
def support(
    ctx: typer.Context,
    question: Annotated[Optional[str], typer.Argument(help="The customer's message (or pipe it in / use --file).")] = None,
    kb: Annotated[
        Optional[list[str]],
        typer.Option("--kb", "-k", help="Knowledge-base file or folder: FAQ, manual, notes (repeatable).", metavar="FILE"),
    ] = None,
    show_sources: Annotated[bool, typer.Option("--show-sources", help="List the knowledge-base passages used (stderr, or a JSON event with --json).")] = False,
    embed_model: Annotated[
        Optional[str],
        typer.Option("--embed-model", help="Vectors for ranking: 'static' (built in, multilingual), 'none' (BM25 and 4-grams only), or an embedding GGUF.", metavar="MODEL"),
    ] = None,
    template: Annotated[Optional[str], typer.Option("--template", "-t", help="Template to use instead of 'support'.", autocompletion=complete_template)] = None,
    file: FileOption = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value: company, product, tone.", metavar="KEY=VALUE")] = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Reply to a customer from your knowledge base: polite, grounded, and honest when it does not know.

    The knowledge base is split into sections and paragraphs, ranked against the question (BM25 and
    multilingual sentence vectors, fused) and the best few that fit the context are sent; the reply cites them.

    Example: gptcli support "How do I get a refund?" --kb faq.md -v company=Acme --show-sources
    """
    from gptcli import knowledge
    from gptcli.models import demo_notice

    st = state(ctx)
    if kb and any(pair.partition("=")[0].strip() == "knowledge" for pair in var or []):
        raise UsageError("give the knowledge with --kb or -v knowledge=..., not both")
    files = knowledge.load_files(kb) if kb else []
    embed_spec = embed_model or gen.settings(st.settings).embed_model
    if files:
        knowledge.check_embed_model(embed_spec)  # a misspelt --embed-model fails before the chat model loads

    noted: list[str] = []  # the demo model is named once, even when each input line is a request (--each-line)

    def build(tmpl: Template, text: str, values: dict[str, str], engine: Engine, sampling: Sampling) -> list[Message]:
        if not noted and (note := demo_notice(engine.model_name, "write support replies")) is not None:
            st.env.notice(note)
            noted.append(note)
        if not files:
            return tmpl.render(text, values)
        if tmpl.variable("knowledge") is None:
            raise TemplateError(f"template '{tmpl.name}' has no 'knowledge' variable to hold the --kb passages")
        settings = gen.settings(st.settings)
        embedder = knowledge.open_embedder(embed_spec, settings)
        try:
            ranker = knowledge.build_ranker(files, embedder, notice=st.env.notice)
            reserve = knowledge.reply_reserve(engine.context_length, sampling.max_tokens)
            grounding = knowledge.ground(tmpl, text, values, [], engine, reserve, ranker=ranker)
        finally:
            knowledge.close_embedder(embedder)  # its memory goes before the reply is generated
        if show_sources:
            _show_sources(st, gen, grounding)
        return grounding.messages

    raise typer.Exit(
        run_template(st, template or "support", gen, prompt=question, file=file, var=var, build_messages=build, structured=structured)
    )


def _writing_command(
    st: AppState, name: str, gen: GenOptions, instructions: str | None, file: str | None, var: list[str] | None, structured: StructOptions
) -> int:
    return run_template(st, name, gen, file=file, var=var, instructions=instructions, input_from_prompt=False, structured=structured)


@app.command()
@generation_options
@structured_options
def summarize(
    ctx: typer.Context,
    instructions: Annotated[Optional[str], typer.Argument(help="What to focus on (\"the decisions and who does what\").")] = None,
    file: FileOption = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value: length, format.", metavar="KEY=VALUE")] = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Summarize text from stdin or --file: main points, decisions, names and numbers.

    Example: cat meeting.txt | gptcli summarize -v format="bullet points"
    """
    raise typer.Exit(_writing_command(state(ctx), "summarize", gen, instructions, file, var, structured))


@app.command()
@generation_options
@structured_options
def rewrite(
    ctx: typer.Context,
    instructions: Annotated[Optional[str], typer.Argument(help="Extra instructions (\"make it friendlier\").")] = None,
    file: FileOption = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value: goal, tone.", metavar="KEY=VALUE")] = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Rewrite text from stdin or --file: clearer, shorter, or in another tone, same meaning.

    Example: cat paragraph.txt | gptcli rewrite -v goal=shorter -v tone=formal
    """
    raise typer.Exit(_writing_command(state(ctx), "rewrite", gen, instructions, file, var, structured))


@app.command()
@generation_options
@structured_options
def proofread(
    ctx: typer.Context,
    instructions: Annotated[Optional[str], typer.Argument(help="Extra instructions (\"keep the Oxford comma\").")] = None,
    file: FileOption = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value: variety (e.g. British).", metavar="KEY=VALUE")] = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Fix spelling, grammar and punctuation in text from stdin or --file, keeping its meaning.

    Example: gptcli proofread --file letter.txt > letter-fixed.txt
    """
    raise typer.Exit(_writing_command(state(ctx), "proofread", gen, instructions, file, var, structured))


@app.command()
@generation_options
@structured_options
def reply(
    ctx: typer.Context,
    instructions: Annotated[Optional[str], typer.Argument(help="The gist of your answer (\"yes, but Friday is better\").")] = None,
    file: FileOption = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value: tone, length.", metavar="KEY=VALUE")] = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Write a reply to a message you received (stdin or --file), saying what you want to say.

    Example: pbpaste | gptcli reply "thank them, and say yes for Friday at 10"
    """
    raise typer.Exit(_writing_command(state(ctx), "reply", gen, instructions, file, var, structured))


@app.command()
@generation_options
def complete(
    ctx: typer.Context,
    text: Annotated[Optional[str], typer.Argument(help="The text to continue (or pipe it in / use --file).")] = None,
    file: FileOption = None,
    echo: Annotated[bool, typer.Option("--echo", help="Print the text itself before its continuation.")] = False,
    stop: Annotated[Optional[list[str]], typer.Option("--stop", help="Stop when the model writes this string (repeatable).", metavar="TEXT")] = None,
    gen: GenOptions = GenOptions(),
) -> None:
    """Continue a text as written, with no chat template: works with base and chat models.

    Example: gptcli complete "The sky is" -n 20 --echo
    """
    from gptcli.flow import complete as complete_text

    st = state(ctx)
    settings = gen.settings(st.settings)
    material = read_material(st, file)
    if material is not None:
        material = material.rstrip("\n") or None
    if text and material:
        raise UsageError("give the text as an argument or on stdin/--file, not both")
    prompt = text or material
    if not prompt:
        raise InputError("nothing to complete: give a text, or pipe one into gptcli complete")
    engine = choose.open_engine(settings)
    sampling = sampling_from(settings)
    if stop:
        sampling = dataclasses.replace(sampling, stop=tuple(s for s in stop if s))
    result = complete_text(engine, prompt, sampling, st.env, output_mode(gen, settings), echo=echo)
    raise typer.Exit(130 if result.interrupted else 0)
