"""The one trip every command makes: messages -> engine -> renderer -> store."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gptcli.engines import Chunk, Engine, Message, Sampling
from gptcli.repetition import LOOP_NOTICE, guard_stream
from gptcli.render import Env, Reply, make_renderer, render_stream, stats_line


@dataclass(frozen=True)
class OutputMode:
    """How a reply is shown: chosen once per command from flags and the terminal."""

    plain: bool = False
    json: bool = False
    stream: bool = True
    stats: bool = False
    loop_guard: bool = True  # stop a reply that starts repeating itself (gptcli.repetition)


def generate(engine: Engine, messages: Sequence[Message], sampling: Sampling, env: Env, mode: OutputMode) -> Reply:
    """Stream one reply to the screen. Ctrl-C stops it and keeps what came (``reply.interrupted``)."""
    renderer = make_renderer(env, plain=mode.plain, json_lines=mode.json, stream=mode.stream)
    reply = render_stream(_guarded(engine.stream(messages, sampling), mode), renderer)
    _loop_notice(reply, env)
    if mode.stats and not mode.json:
        used = reply.usage.prompt_tokens + reply.usage.completion_tokens
        env.err_console.print(stats_line(reply.usage, used, engine.context_length), style="dim", markup=False, highlight=False, soft_wrap=True)
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
