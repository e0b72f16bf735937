"""How a reply's text reaches stdout: plain, sanitized, buffered, JSON events, or Markdown (``make_renderer``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any, Protocol

from gptcli.engines import Usage
from gptcli.errors import GptcliError
from gptcli.render.env import Env, OutputClosed, write_out
from gptcli.render.markdown import MarkdownRenderer
from gptcli.render.writers import write_event


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
        write_out(self.stream, text)
        self.last = text[-1]

    def finish(self, usage: Usage | None) -> None:
        if self.last != "\n":
            self.feed("\n")

class JsonRenderer:
    """JSON lines: ``{"type": "chunk", "text"}`` per piece, then ``{"type": "done", "text", "usage"}``."""

    def __init__(self, stream: IO[str], extra: dict[str, Any] | None = None) -> None:
        self.stream = stream
        self.parts: list[str] = []
        self.extra = extra or {}

    def emit(self, event: dict[str, Any]) -> None:
        write_event(self.stream, event)

    def feed(self, text: str) -> None:
        if text:
            self.parts.append(text)
            self.emit({"type": "chunk", "text": text})

    def finish(self, usage: Usage | None) -> None:
        event: dict[str, Any] = {"type": "done", "text": "".join(self.parts)}
        event.update(self.extra)
        event["usage"] = rounded_usage(usage) if usage else None
        self.emit(event)


class SanitizedRenderer:
    """On a terminal: control characters in model or server text are shown (``␛[2J``), never executed."""

    def __init__(self, inner: Renderer) -> None:
        self.inner = inner

    def feed(self, text: str) -> None:
        from gptcli.textio import sanitize_terminal

        self.inner.feed(sanitize_terminal(text))

    def finish(self, usage: Usage | None) -> None:
        self.inner.finish(usage)


class JsonValueRenderer:
    """A reply that must be JSON: checked when complete, then printed as JSON.

    On a terminal the raw text shows while it streams (a transient preview) and is replaced by the
    value, indented and highlighted; on a pipe the value is one line; with ``--json`` the usual
    chunk events stream and the ``done`` event carries the value parsed (``data``) or why it is not
    one (``error``). A reply that fails ``check`` prints nothing but that event: the caller reports it.
    """

    def __init__(self, env: Env, check: Callable[[str, Usage | None], Any], *, json_lines: bool = False) -> None:
        self.env = env
        self.check = check
        self.events = JsonRenderer(env.stdout) if json_lines else None
        self.pretty = not json_lines and env.styled_output()
        self.parts: list[str] = []
        self.value: Any = None
        self.error: GptcliError | None = None
        self.live: Any = None

    def feed(self, text: str) -> None:
        if not text:
            return
        self.parts.append(text)
        if self.events is not None:
            self.events.feed(text)
        elif self.pretty:
            from rich.text import Text

            if self.live is None:
                from rich.live import Live

                self.live = Live(console=self.env.console(), transient=True, refresh_per_second=15, vertical_overflow="crop")
                self.live.start()
            self.live.update(Text("".join(self.parts), style="dim"))

    def finish(self, usage: Usage | None) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        try:
            self.value = self.check("".join(self.parts), usage)
        except GptcliError as exc:
            self.error = exc
        if self.events is not None:
            self.events.extra = {"data": self.value} if self.error is None else {"error": str(self.error)}
            self.events.finish(usage)
            return
        if self.error is not None:
            return
        if self.pretty:
            from rich.json import JSON

            self.env.console().print(JSON(json.dumps(self.value, ensure_ascii=False), indent=2, ensure_ascii=False), soft_wrap=True)
            return
        try:
            self.env.stdout.write(json.dumps(self.value, ensure_ascii=False) + "\n")
            self.env.stdout.flush()
        except BrokenPipeError:
            raise OutputClosed from None


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
    if env.stdout_isatty and not env.raw:
        renderer = SanitizedRenderer(renderer)
    return renderer if stream else BufferedRenderer(renderer)
