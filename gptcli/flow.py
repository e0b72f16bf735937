"""The one trip every command makes: messages -> engine -> renderer -> store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gptcli.engines import Chunk, Engine, Message, Sampling
from gptcli.errors import ReplyCut
from gptcli.render import (
    Activity,
    Env,
    JsonValueRenderer,
    Renderer,
    Reply,
    make_renderer,
    render_stream,
    stats_line,
)
from gptcli.repetition import LOOP_NOTICE, guard_stream

if TYPE_CHECKING:
    from gptcli.schema import Structure


@dataclass(frozen=True)
class OutputMode:
    """How a reply is shown: chosen once per command from flags and the terminal."""

    plain: bool = False
    json: bool = False
    stream: bool = True
    stats: bool = False
    loop_guard: bool = True  # stop a reply that starts repeating itself (gptcli.repetition)


def generate(
    engine: Engine,
    messages: Sequence[Message],
    sampling: Sampling,
    env: Env,
    mode: OutputMode,
    structure: Structure | None = None,
    *,
    waiting: str | None = None,
) -> Reply:
    """Stream one reply to the screen. Ctrl-C stops it and keeps what came (``reply.interrupted``).

    ``waiting`` (such as "reading 1200 tokens") is shown with a spinner until the first token, on a terminal.
    With a ``structure`` holding a schema (``sampling`` already constrained by it), the reply is
    checked and shown as JSON; ``reply.data`` is its value and ``reply.text`` that value on one line.
    A reply that is not valid raises ``ReplyCut`` carrying it as ``partial`` and the ``StructuredReplyError``
    as ``cause``; so do a failure mid-reply and stdout lost (``render_stream``).
    """
    checked = JsonValueRenderer(env, structure.check, json_lines=mode.json) if structure and structure.is_json else None
    renderer: Renderer = checked or make_renderer(
        env, plain=mode.plain or structure is not None, json_lines=mode.json, stream=mode.stream
    )
    activity = Activity(env.stderr, waiting) if waiting and not mode.json and env.stderr_isatty and env.styled(env.stderr) else None
    # a JSON reply is bounded by its grammar: items of the same shape are not a loop
    chunks = engine.stream(messages, sampling) if structure is not None else _guarded(engine.stream(messages, sampling), mode)
    reply = render_stream(chunks, renderer, activity)
    _loop_notice(reply, env)
    if mode.stats and not mode.json:
        used = reply.usage.prompt_tokens + reply.usage.completion_tokens
        env.err_console.print(stats_line(reply.usage, used, engine.context_length), style="dim", markup=False, highlight=False, soft_wrap=True)
    if checked is not None and not reply.interrupted:
        if checked.error is not None:
            raise ReplyCut(checked.error, Reply(reply.text, reply.usage, interrupted=True)) from checked.error
        from gptcli.schema import dump

        reply.data = checked.value
        reply.text = dump(checked.value, pretty=False)  # what history keeps: JSON that parses
    return reply


def complete(engine: Engine, prompt: str, sampling: Sampling, env: Env, mode: OutputMode, *, echo: bool = False) -> Reply:
    """Stream a raw continuation of ``prompt`` (no chat template), as plain text; ``echo`` shows the prompt first."""
    renderer = make_renderer(env, plain=True, json_lines=mode.json, stream=mode.stream)
    if echo and not mode.json:
        renderer.feed(prompt)
    reply = render_stream(_guarded(engine.complete(prompt, sampling), mode), renderer)
    _loop_notice(reply, env)
    if mode.stats and not mode.json:
        used = reply.usage.prompt_tokens + reply.usage.completion_tokens
        env.err_console.print(stats_line(reply.usage, used, engine.context_length), style="dim", markup=False, highlight=False, soft_wrap=True)
    return reply


def _guarded(chunks: Iterator[Chunk], mode: OutputMode) -> Iterator[Chunk]:
    """The reply's chunks, stopped where it starts repeating itself unless the guard is off."""
    return guard_stream(chunks) if mode.loop_guard else chunks


def _loop_notice(reply: Reply, env: Env) -> None:
    if reply.usage.finish_reason == "loop":
        env.notice(LOOP_NOTICE)
