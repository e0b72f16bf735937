"""Everything written to the terminal: streaming Markdown on a TTY, plain text on a pipe, JSON lines."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from rich.console import Console, ConsoleOptions, RenderResult

from gptcli.engines import Chunk, Usage
from gptcli.errors import GptcliError


@dataclass
class Env:
    """The process's streams and how to treat them; tests build their own."""

    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    color: str = "auto"  # auto | always | never
    quiet: bool = False

    @staticmethod
    def _isatty(stream: IO[str]) -> bool:
        try:
            return stream.isatty()
        except (AttributeError, ValueError):
            return False

    @property
    def stdin_isatty(self) -> bool:
        return self._isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return self._isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return self._isatty(self.stderr)

    def styled(self, stream: IO[str] | None = None) -> bool:
        """Whether ``stream`` gets terminal styling (escape codes, Markdown, live redraws).

        ``--color always``/``never`` decide alone; otherwise ``FORCE_COLOR`` turns styling on (unless
        ``NO_COLOR`` is set too), and a terminal gets it unless ``TERM`` is ``dumb``.
        """
        if self.color == "always":
            return True
        if self.color == "never":
            return False
        if os.environ.get("FORCE_COLOR") and not os.environ.get("NO_COLOR"):
            return True
        return self._isatty(stream or self.stdout) and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")

    def colored(self) -> bool:
        """Whether styled output may use colours: ``NO_COLOR`` keeps bold and layout, drops colours."""
        if self.color == "always":
            return True
        return self.color != "never" and not os.environ.get("NO_COLOR")

    def console(self, stream: IO[str] | None = None, *, quiet: bool = False) -> Console:
        """A Rich console on ``stream`` (stdout by default) following the colour rules.

        The width comes from ``COLUMNS`` when set, else from the terminal, else 80.
        """
        stream = stream or self.stdout
        styled = self.styled(stream)
        kwargs: dict[str, Any] = {
            "file": stream,
            "highlight": False,
            "soft_wrap": False,
            "force_terminal": styled,
            "no_color": not self.colored(),
            "quiet": quiet,
        }
        if not styled:
            kwargs["color_system"] = None
        elif self.color == "always" and os.environ.get("TERM", "").lower() in ("dumb", "unknown"):
            kwargs["color_system"] = "standard"  # asked for colour: give it, even to a dumb terminal
        return Console(**kwargs)

    @property
    def err_console(self) -> Console:
        """The console for stderr: notices, stats, progress; silent with ``--quiet``."""
        return self.console(self.stderr, quiet=self.quiet)

    def styled_output(self) -> bool:
        """Rich Markdown on stdout: a terminal (or --color always / FORCE_COLOR), never with TERM=dumb."""
        return self.styled(self.stdout)

    def notice(self, text: str) -> None:
        """A one-line notice on stderr (dim on a terminal), unless --quiet."""
        if self.quiet:
            return
        self.err_console.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)

    def error(self, text: str) -> None:
        """The one stderr line for an error; never silenced, not even by --quiet."""
        if self.styled(self.stderr) and self.colored():
            from rich.markup import escape

            console = self.console(self.stderr)
            console.print(f"[bold red]error:[/] {escape(text)}", markup=True, highlight=False, soft_wrap=True)
        else:
            try:
                print(f"error: {text}", file=self.stderr, flush=True)
            except (BrokenPipeError, ValueError):
                pass


class OutputClosed(Exception):
    """stdout went away (a closed pipe such as ``| head``): stop quietly."""


class Renderer(Protocol):
    def feed(self, text: str) -> None: ...

    def finish(self, usage: Usage | None) -> None: ...


class PlainRenderer:
    """Raw text, flushed as it comes, ending with a newline; no escape codes."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = "\n"

    def feed(self, text: str) -> None:
        if not text:
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None
        self.last = text[-1]

    def finish(self, usage: Usage | None) -> None:
        if self.last != "\n":
            self.feed("\n")


def _settle_point(text: str) -> int:
    """Index up to which ``text`` holds finished Markdown blocks (a blank line outside code fences)."""
    fence: str | None = None
    point = 0
    pos = 0
    lines = text.split("\n")
    for i, line in enumerate(lines[:-1]):  # the last line is unfinished
        stripped = line.lstrip()
        marker = stripped[:3]
        if marker in ("```", "~~~"):
            if fence is None:
                fence = marker
            elif marker == fence and set(stripped.rstrip()) == {fence[0]}:
                fence = None
                point = pos + len(line) + 1  # a closed fence is a finished block
        elif fence is None and line.strip() == "" and i > 0:
            point = pos + len(line) + 1
        pos += len(line) + 1
    return point


class _Tail:
    """The unfinished end of a reply, parsed as Markdown only when Live draws it."""

    def __init__(self) -> None:
        self.text = ""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.text.strip():
            from rich.markdown import Markdown  # imported when a reply renders, not for --help

            yield Markdown(self.text)


class MarkdownRenderer:
    """Streams Markdown: finished blocks are printed once, only the unfinished tail stays live.

    Re-rendering the whole reply in a ``Live`` region duplicates or hides text once it is taller
    than the screen; settling finished blocks keeps the live part small and the scrollback clean.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        from rich.live import Live

        self.tail = _Tail()
        self.printed_blocks = 0
        self.live = Live(
            self.tail,
            console=console,
            auto_refresh=True,
            refresh_per_second=15,
            vertical_overflow="ellipsis",
            transient=False,
        )
        self.started = False

    def _print_block(self, block: str) -> None:
        if not block.strip():
            return
        if self.printed_blocks:
            self.console.print()
        from rich.markdown import Markdown

        self.console.print(Markdown(block.strip("\n")))
        self.printed_blocks += 1

    def feed(self, text: str) -> None:
        if not text:
            return
        if not self.started:
            self.live.start()
            self.started = True
        self.tail.text += text
        point = _settle_point(self.tail.text)
        if point:
            done, self.tail.text = self.tail.text[:point], self.tail.text[point:]
            self._print_block(done)
        self.live.refresh() if "\n" in text else None

    def finish(self, usage: Usage | None) -> None:
        if not self.started:
            return
        rest = self.tail.text
        self.tail.text = ""
        self.live.update(self.tail, refresh=True)
        self.live.stop()
        self._print_block(rest)


class JsonRenderer:
    """JSON lines: ``{"type": "chunk", "text"}`` per piece, then ``{"type": "done", "text", "usage"}``."""

    def __init__(self, stream: IO[str], extra: dict[str, Any] | None = None) -> None:
        self.stream = stream
        self.parts: list[str] = []
        self.extra = extra or {}

    def emit(self, event: dict[str, Any]) -> None:
        try:
            self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def feed(self, text: str) -> None:
        if text:
            self.parts.append(text)
            self.emit({"type": "chunk", "text": text})

    def finish(self, usage: Usage | None) -> None:
        event: dict[str, Any] = {"type": "done", "text": "".join(self.parts)}
        event.update(self.extra)
        event["usage"] = rounded_usage(usage) if usage else None
        self.emit(event)


def rounded_usage(usage: Usage) -> dict[str, Any]:
    """``usage.as_dict()`` with times in milliseconds' precision (0.214, not 0.21384710099999)."""
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in usage.as_dict().items()}


class BufferedRenderer:
    """``--no-stream``: collect everything, then hand it to another renderer at once."""

    def __init__(self, inner: Renderer) -> None:
        self.inner = inner
        self.parts: list[str] = []

    def feed(self, text: str) -> None:
        self.parts.append(text)

    def finish(self, usage: Usage | None) -> None:
        self.inner.feed("".join(self.parts))
        self.inner.finish(usage)


def make_renderer(env: Env, *, plain: bool = False, json_lines: bool = False, stream: bool = True) -> Renderer:
    """Choose the renderer once: JSON lines, Rich Markdown on a terminal, else plain text."""
    renderer: Renderer
    if json_lines:
        return JsonRenderer(env.stdout)
    if not plain and env.styled_output():
        renderer = MarkdownRenderer(env.console())
    else:
        renderer = PlainRenderer(env.stdout)
    return renderer if stream else BufferedRenderer(renderer)


@dataclass
class Reply:
    """A streamed reply as it ended: its text, its usage, and whether the user cut it short."""

    text: str
    usage: Usage
    interrupted: bool = False


def render_stream(chunks: Iterable[Chunk], renderer: Renderer) -> Reply:
    """Drive a chunk stream into a renderer. Ctrl-C stops the stream and keeps what came."""
    parts: list[str] = []
    usage: Usage | None = None
    started = time.perf_counter()
    interrupted = False
    failure: GptcliError | None = None
    iterator: Iterator[Chunk] = iter(chunks)
    try:
        for chunk in iterator:
            if chunk.text:
                parts.append(chunk.text)
                renderer.feed(chunk.text)
            if chunk.usage is not None:
                usage = chunk.usage
    except KeyboardInterrupt:
        interrupted = True
    except GptcliError as exc:  # the engine failed mid-reply (a server went away): keep what came
        if not parts:
            raise
        failure = exc
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except KeyboardInterrupt:  # a second Ctrl-C while closing
                interrupted = True
    if usage is None:
        usage = Usage(total_time=time.perf_counter() - started)
    if interrupted:
        usage.finish_reason = "interrupted"
    if failure is not None:
        usage.finish_reason = "error"
    try:
        renderer.finish(usage)
    except KeyboardInterrupt:
        pass
    if failure is not None:
        # the partial reply is on screen; callers that save history find it on the error
        failure.partial_reply = Reply("".join(parts), usage, interrupted=True)  # type: ignore[attr-defined]
        raise failure
    return Reply("".join(parts), usage, interrupted)


def stats_line(usage: Usage, context_used: int | None = None, context_size: int | None = None) -> str:
    """The dim status line after a reply: tokens, time to first token, speed, context."""
    parts = [
        f"{usage.prompt_tokens} prompt{f' ({usage.cached_tokens} cached)' if usage.cached_tokens else ''}"
        f" + {usage.completion_tokens} reply tokens",
        f"first token {usage.time_to_first_token:.2f} s",
        f"{usage.tokens_per_second:.1f} tok/s",
    ]
    if context_used is not None and context_size:
        parts.append(f"context {context_used}/{context_size}")
    if usage.finish_reason not in ("stop", ""):
        parts.append(usage.finish_reason)
    return " · ".join(parts)
