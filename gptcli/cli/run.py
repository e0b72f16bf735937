"""What one-shot commands share: gather the input, render the template, make the trip once."""

from __future__ import annotations

from collections.abc import Callable

from gptcli.cli.app import AppState
from gptcli.cli.options import GenOptions, sampling_from
from gptcli.engines import Engine, Message, Sampling, choose
from gptcli.errors import InputError
from gptcli.flow import OutputMode, generate
from gptcli.templates import Template, load_template, parse_vars
from gptcli.textio import read_stream, read_text

MessageBuilder = Callable[[Template, str, dict[str, str], Engine, Sampling], list[Message]]


def read_material(st: AppState, file: str | None) -> str | None:
    """Text from ``--file`` (``-`` is stdin), else from stdin when it is not a terminal."""
    if file and file != "-":
        return read_text(file)
    if file == "-" or not st.env.stdin_isatty:
        return read_stream(st.env.stdin)
    return None


def output_mode(gen: GenOptions) -> OutputMode:
    return OutputMode(plain=gen.plain, json=gen.json, stream=not gen.no_stream, stats=gen.stats)


def run_template(
    st: AppState,
    template_name: str,
    gen: GenOptions,
    *,
    prompt: str | None = None,
    file: str | None = None,
    var: list[str] | None = None,
    instructions: str | None = None,
    input_from_prompt: bool = True,
    build_messages: MessageBuilder | None = None,
) -> int:
    """Render ``template_name`` with the input and stream the reply. Returns the exit code.

    ``build_messages(template, text, values, engine, sampling)`` replaces the plain render (``support``
    uses it to fit knowledge-base passages into the context window).
    """
    settings = gen.settings(st.settings)
    template = load_template(template_name)
    values = parse_vars(var)
    if instructions is not None and any(v.name == "instructions" for v in template.variables):
        values["instructions"] = instructions
    template.values(values)  # unknown or missing variables fail before any reading or loading

    material = read_material(st, file)
    if material is not None and not material.strip():
        material = None if prompt else ""
    if input_from_prompt:
        parts = [p for p in (prompt, material) if p and p.strip()]
        text = "\n\n".join(parts)
        if not text and template.input_required:
            raise InputError("nothing to ask: give a prompt, or pipe text into gptcli")
    else:
        if instructions and "instructions" not in values:
            material = f"{instructions}\n\n{material}" if material else instructions
        text = material or ""
        if not text.strip() and template.input_required:
            raise InputError(f"no input for '{template_name}': pipe text into it or use --file")

    if build_messages is None:
        messages = template.render(text, values)
    engine = choose.open_engine(settings)
    sampling = sampling_from(settings, template.temperature, template.max_tokens)
    if build_messages is not None:
        messages = build_messages(template, text, values, engine, sampling)
    reply = generate(engine, messages, sampling, st.env, output_mode(gen))
    return 130 if reply.interrupted else 0
