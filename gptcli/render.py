"""Everything written to the terminal: streaming Markdown on a TTY, plain text on a pipe, JSON lines."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from rich.console import Console

from gptcli.engines import Chunk, Usage
from gptcli.errors import GptcliError, ReplyCut


@dataclass
class Env:
    """The process's streams and how to treat them; tests build their own."""

    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    color: str = "auto"  # auto | always | never
    quiet: bool = False
    raw: bool = False  # --raw: model and server text reach a terminal as they are, escape codes included

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
            message = f"error: {text}"
            if self.stderr_isatty:  # a terminal breaks lines mid-word; wrap them at words
                message = wrap_words(message, console.width)
            console.print(f"[bold red]error:[/]{escape(message[6:])}", markup=True, highlight=False, soft_wrap=True)
        else:
            try:
                print(f"error: {text}", file=self.stderr, flush=True)
            except (BrokenPipeError, ValueError):
                pass


def wrap_words(text: str, width: int) -> str:
    """``text`` with each line wrapped at word boundaries to ``width`` columns, keeping its indent."""
    import textwrap

    out: list[str] = []
    for line in text.split("\n"):
        indent = line[: len(line) - len(line.lstrip(" "))]
        out += textwrap.wrap(line, max(10, width), subsequent_indent=indent + "  ", break_on_hyphens=False) or [line]
    return "\n".join(out)


class OutputClosed(Exception):
    """stdout went away (a closed pipe such as ``| head``): stop quietly."""


class OutputFailed(GptcliError):
    """stdout cannot be written (a full disk, ``> /dev/full``): one error line; a reply is still saved."""


def _output_error(exc: OSError) -> OutputFailed:
    return OutputFailed(f"cannot write to standard output: {exc.strerror or exc}")


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
        except OSError as exc:
            raise _output_error(exc) from None
        self.last = text[-1]

    def finish(self, usage: Usage | None) -> None:
        if self.last != "\n":
            self.feed("\n")


def reply_markdown(markup: str, references: dict[str, Any] | None = None) -> Any:
    """Rich Markdown for a reply: HTML-like text (``<details>``, ``List<String>``) is shown as written.

    Rich drops HTML tokens, and a model's reply is not a web page, so the parser runs with HTML
    off. ``references`` are link definitions from earlier in the reply, for a part rendered alone.
    """
    from rich.markdown import Markdown  # imported when a reply renders, not for --help

    markdown = Markdown("")
    markdown.markup = markup
    markdown.parsed = _parser().parse(markup, {"references": dict(references or {})})
    return markdown


def _parser() -> Any:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("strikethrough").enable("table")


@dataclass(frozen=True)
class _Settled:
    """Where the finished part of a reply ends, and what the part after it needs from it."""

    point: int  # characters of the reply that are finished top-level blocks
    last_type: str  # the token type of the last finished block ("hr" has no blank line after it)
    references: dict[str, Any]


def settle(text: str) -> _Settled:
    """How much of ``text`` is finished Markdown: every top-level block but the last.

    The last block may still grow (a list gains items, a fence closes, a line under a paragraph
    makes it a heading), so it stays live. A block with bracketed text waits as well: a link
    definition arriving later would turn ``[text][1]`` into a link. Parsing the whole reply (not
    cutting at blank lines) keeps loose lists, nested bullets and fences whole.
    """
    complete = text[: text.rfind("\n") + 1]
    env: dict[str, Any] = {}
    tokens = _parser().parse(complete, env)
    starts: list[tuple[int, str, bool]] = []  # (first line, type, may change later)
    for token in tokens:
        if token.level == 0 and token.nesting >= 0 and token.map is not None:
            starts.append((token.map[0], token.type.removesuffix("_open"), False))
        if token.type == "inline" and starts and any(c.type == "text" and ("[" in c.content or "]" in c.content) for c in token.children or ()):
            line, kind, _ = starts[-1]
            starts[-1] = (line, kind, True)
    # keep the blocks before the last, up to the first one that may still change
    finished = 0
    last_type = ""
    for index, (_, kind, unsure) in enumerate(starts[:-1]):
        if unsure:
            break
        finished, last_type = index + 1, kind
    if finished == 0:
        return _Settled(0, "", {})
    line = starts[finished][0]
    point = 0
    for _ in range(line):
        point = complete.index("\n", point) + 1
    return _Settled(point, last_type, env.get("references", {}))


def _cell_widths(lines: list[str]) -> list[int]:
    from rich.cells import cell_len

    return [cell_len(_ANSI.sub("", line)) for line in lines]


_TRAILING_BLANKS = re.compile(r"(?:\x1b\[[0-9;]*m| )+$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class MarkdownRenderer:
    """Streams Markdown: finished blocks are printed once, only the unfinished tail is redrawn.

    The tail is drawn in a live area smaller than the window, showing its newest lines, so a
    block taller than the window never freezes (Rich ``Live`` would show ``...``). The area is
    erased by the rows it takes at the current width (terminals rewrap lines when resized), so a
    resize leaves no stale copies. What ends on screen is what rendering the whole reply at once
    gives: a finished block's rendering does not depend on what follows it (``settle`` keeps
    back any that might).
    """

    REFRESH = 1 / 15  # seconds between redraws of the live area

    def __init__(self, console: Console) -> None:
        self.console = console
        self.text = ""
        self.done = 0  # characters of ``text`` printed for good
        self.last_type = ""
        self.references: dict[str, Any] = {}
        self.printed = False
        self.live_widths: list[int] = []  # the cell widths of the live area's lines now on screen
        self.drawn_at = 0.0
        self.live = console.is_terminal  # a terminal, or styling forced onto a pipe (--color always)
        self.cursor_hidden = False

    # the window, asked each time: it may have been resized
    def _size(self) -> tuple[int, int]:
        if self.live:
            try:
                size = os.get_terminal_size(self.console.file.fileno())
                if size.columns > 0 and size.lines > 0:
                    return size.columns, size.lines
            except (OSError, ValueError, AttributeError):
                pass
        return self.console.width, self.console.height

    def _render(self, text: str, width: int) -> list[str]:
        """``text`` as Markdown, rendered to lines of terminal output at ``width`` columns."""
        self.console.width = width
        with self.console.capture() as capture:
            self.console.print(reply_markdown(text, self.references))
        rendered = capture.get()
        return rendered.split("\n")[:-1] if rendered else []

    def _write(self, data: str) -> None:
        try:
            self.console.file.write(data)
            self.console.file.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def _erase_live(self, width: int) -> None:
        if not self.live_widths:
            return
        rows = sum(max(1, -(-w // width)) for w in self.live_widths)  # each line as rewrapped now
        self._write(f"\r\x1b[{rows}A\x1b[J")
        self.live_widths = []

    def _print_lines(self, lines: list[str]) -> None:
        if lines:
            self._write("".join(line + "\n" for line in lines))

    def _with_separator(self, lines: list[str], after: str) -> list[str]:
        """``lines`` of a part rendered alone, with the blank line Rich puts before it in the whole.

        Rich writes a blank line before a block unless the block before it was a rule; a list,
        quote or table rendered alone already starts with that blank line.
        """
        if lines and lines[0] != "" and self.printed and after != "hr":
            return ["", *lines]
        return lines

    def feed(self, text: str) -> None:
        if not text:
            return
        self.text += text
        if self.live and not self.cursor_hidden:
            self._write("\x1b[?25l")
            self.cursor_hidden = True
        # only a finished line can finish a block
        settled = settle(self.text[self.done :]) if "\n" in text else _Settled(0, "", {})
        width, height = self._size()
        if settled.point:
            self.references = {**self.references, **settled.references}
            block = self.text[self.done : self.done + settled.point]
            self._erase_live(width)
            lines = self._render(block, width)
            self._print_lines(self._with_separator(lines, self.last_type))
            self.printed = self.printed or bool(lines)
            self.done += settled.point
            self.last_type = settled.last_type
        if self.live and (settled.point or time.monotonic() - self.drawn_at >= self.REFRESH):
            self._draw(width, height)

    def _draw(self, width: int, height: int) -> None:
        """Redraw the live area: the tail's newest lines, as many as stay on screen through a resize.

        Lines lose their trailing padding, and the area keeps to two thirds of the window's rows
        even if the window narrows to a third of its width: a terminal that rewraps them then
        still has them all on screen, where the next redraw erases them (none pushed up into the
        scrollback, out of reach).
        """
        lines = [_TRAILING_BLANKS.sub("\x1b[0m", line) if line else line for line in self._render(self.text[self.done :], width)]
        lines = self._with_separator(lines, self.last_type)
        narrow = max(20, width // 3)
        budget = max(4, height * 2 // 3)
        keep = 0
        for cells in reversed(_cell_widths(lines)):
            budget -= max(1, -(-cells // narrow))
            if budget < 0:
                break
            keep += 1
        lines = lines[len(lines) - max(1, keep) :]
        self._erase_live(width)
        self._print_lines(lines)
        self.live_widths = _cell_widths(lines)
        self.drawn_at = time.monotonic()

    def finish(self, usage: Usage | None) -> None:
        width, _ = self._size()
        self._erase_live(width)
        rest = self.text[self.done :]
        if rest.strip():
            self.references = {**self.references, **settle(rest + "\n").references}
            self._print_lines(self._with_separator(self._render(rest, width), self.last_type))
        self.done = len(self.text)
        if self.cursor_hidden:
            self._write("\x1b[?25h")
            self.cursor_hidden = False


def plain_columns(rows: Sequence[Sequence[str]], *, gap: int = 2) -> list[str]:
    """``rows`` as lines of left-aligned columns ``gap`` spaces apart, for a pipe: a Rich table, no styles.

    Widths are terminal cells (a CJK title takes two per character); trailing spaces are dropped.
    """
    import io

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if not rows:
        return []
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, gap, 0, 0), collapse_padding=False)
    for _ in rows[0]:
        table.add_column(no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    buffer = io.StringIO()
    Console(file=buffer, width=1_000_000, color_system=None, force_terminal=False, legacy_windows=False).print(table)
    return [line.rstrip() for line in buffer.getvalue().splitlines()]


@dataclass(frozen=True)
class Column:
    """A column of a table written by ``write_table``: its heading and how its cells sit."""

    heading: str
    wrap: bool = True  # on a terminal, a cell too wide folds onto more lines; False: one line, cut with "…"


def write_table(
    env: Env,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    bold: Collection[int] = (),
    headings_on_pipe: bool = True,
    above: str | None = None,
) -> None:
    """A table on stdout: on a terminal a Rich table with bold headings, the rows whose index is in
    ``bold`` in bold; on a pipe the same cells in plain columns (``plain_columns``), the headings
    left out unless ``headings_on_pipe``. ``above`` is a line before the table (dim on a terminal).

    Cells are text as it is: a title such as ``[red]`` is never read as Rich markup.
    """
    if env.styled_output():
        from rich.table import Table
        from rich.text import Text

        console = env.console()
        if above is not None:
            console.print(above, style="dim", markup=False, highlight=False, soft_wrap=True)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in columns:
            table.add_column(column.heading, no_wrap=not column.wrap, overflow="fold" if column.wrap else "ellipsis")
        for index, row in enumerate(rows):
            table.add_row(*(Text(cell) for cell in row), style="bold" if index in bold else None)
        console.print(table)
        return
    lines = [] if above is None else [above]
    headings = [[column.heading for column in columns]] if headings_on_pipe else []
    lines += plain_columns([*headings, *rows])
    env.stdout.write("".join(line + "\n" for line in lines))
    env.stdout.flush()


def write_text(env: Env, text: str) -> None:
    """``text`` on stdout as it is (data, a table already laid out, an export), flushed."""
    env.stdout.write(text)
    env.stdout.flush()


def write_json(stream: IO[str], value: Any) -> None:
    """The ``--json`` of a listing or a show: one indented JSON document, non-ASCII text as it is."""
    stream.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    stream.flush()


def write_event(stream: IO[str], event: dict[str, Any]) -> None:
    """The one writer of ``--json`` events: one JSON object a line, flushed at once.

    A closed pipe raises ``OutputClosed``; another write failure (a full disk) ``OutputFailed``.
    """
    try:
        stream.write(json.dumps(event, ensure_ascii=False) + "\n")
        stream.flush()
    except BrokenPipeError:
        raise OutputClosed from None
    except OSError as exc:
        raise _output_error(exc) from None


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


@dataclass
class Reply:
    """A streamed reply as it ended: its text, its usage, and whether the user cut it short."""

    text: str
    usage: Usage
    interrupted: bool = False
    data: Any = None  # the checked JSON value of a reply made to a schema (``--schema``)


class Activity:
    """One line on the terminal until the first token: a spinner, what is being read, the time so far.

    The model reads a long prompt inside llama.cpp, where Python's own Ctrl-C handler waits until it
    returns; the signal's wakeup byte reaches this thread at once, so "stopping..." shows at once.
    """

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    QUIET = 0.2  # seconds before the line shows: a quick first token needs no spinner

    def __init__(self, stream: IO[str], label: str, interval: float = 0.1) -> None:
        self.stream = stream
        self.label = label
        self.interval = interval
        self.started = time.perf_counter()
        self.stopping = False
        self.shown = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._wakeup: tuple[Any, Any] | None = None  # a socket pair
        self._old_wakeup = -1

    def start(self) -> Activity:
        import socket

        pair = socket.socketpair()
        try:  # only the main thread may set it; elsewhere the spinner still turns
            pair[1].setblocking(False)
            self._old_wakeup = signal.set_wakeup_fd(pair[1].fileno(), warn_on_full_buffer=False)
            self._wakeup = pair
        except (ValueError, OSError):
            for end in pair:
                end.close()
        self._thread = threading.Thread(target=self._run, name="gptcli-activity", daemon=True)
        self._thread.start()
        return self

    def _line(self) -> str:
        if self.stopping:
            return "stopping…"
        frame = self.FRAMES[int((time.perf_counter() - self.started) / self.interval) % len(self.FRAMES)]
        return f"{frame} {self.label} · {time.perf_counter() - self.started:.1f} s"

    def _draw(self) -> None:
        with self._lock:
            if self._done.is_set() or (not self.stopping and time.perf_counter() - self.started < self.QUIET):
                return
            try:
                self.stream.write(f"\r\x1b[K\x1b[2m{self._line()}\x1b[0m")
                self.stream.flush()
                self.shown = True
            except (OSError, ValueError):
                pass

    def _run(self) -> None:
        import select

        while not self._done.is_set():
            self._draw()
            if self._wakeup is None:
                self._done.wait(self.interval)
                continue
            ready, _, _ = select.select([self._wakeup[0]], [], [], self.interval)
            if ready:
                with contextlib.suppress(OSError):
                    data = self._wakeup[0].recv(64)
                    if bytes([signal.SIGINT]) in data:
                        self.stopping = True

    def stop(self) -> None:
        """Erase the line (before the reply's first text is written, or when the reply ends)."""
        if self._thread is None:
            return
        with self._lock:
            self._done.set()
            if self.shown:
                with contextlib.suppress(OSError, ValueError):
                    self.stream.write("\r\x1b[K")
                    self.stream.flush()
        self._thread.join(1)
        self._thread = None
        if self._wakeup is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.set_wakeup_fd(self._old_wakeup)
            for end in self._wakeup:
                end.close()
            self._wakeup = None


def render_stream(chunks: Iterable[Chunk], renderer: Renderer, activity: Activity | None = None) -> Reply:
    """Drive a chunk stream into a renderer. Ctrl-C stops the stream and keeps what came.

    ``activity`` (a spinner) runs until the first text arrives.
    """
    parts: list[str] = []
    usage: Usage | None = None
    started = time.perf_counter()
    interrupted = False
    failure: GptcliError | None = None
    output_lost: OutputClosed | OutputFailed | None = None
    iterator: Iterator[Chunk] = iter(chunks)
    if activity is not None:
        activity.start()
    try:
        for chunk in iterator:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.text:
                if activity is not None:
                    activity.stop()
                parts.append(chunk.text)
                try:
                    renderer.feed(chunk.text)
                except (OutputClosed, OutputFailed) as exc:  # `| head -c 5`, `> /dev/full`: stop, keep the reply
                    output_lost = exc
                    break
    except KeyboardInterrupt:
        interrupted = True
    except GptcliError as exc:  # the engine failed mid-reply (a server went away): keep what came
        if not parts:
            raise
        failure = exc
    finally:
        if activity is not None:
            activity.stop()
        close = getattr(iterator, "close", None)
        if close is not None:
            try:
                close()
            except KeyboardInterrupt:  # a second Ctrl-C while closing
                interrupted = True
    if usage is None:
        usage = Usage(total_time=time.perf_counter() - started)
    if interrupted or output_lost is not None:
        usage.finish_reason = "interrupted"
    if output_lost is not None:  # nothing more can be shown; callers that save history find the reply on the ReplyCut
        raise ReplyCut(output_lost, Reply("".join(parts), usage, interrupted=True)) from output_lost
    if failure is not None:
        usage.finish_reason = "error"
    try:
        renderer.finish(usage)
    except KeyboardInterrupt:
        pass
    if failure is not None:
        # the partial reply is on screen; callers that save history find it on the ReplyCut
        raise ReplyCut(failure, Reply("".join(parts), usage, interrupted=True)) from failure
    return Reply("".join(parts), usage, interrupted)


def stats_line(
    usage: Usage, context_used: int | None = None, context_size: int | None = None, reply_cap: int | None = None
) -> str:
    """The dim status line after a reply: tokens (of the reply cap), time to first token, speed, context."""
    cap = f" (of {reply_cap})" if reply_cap else ""
    parts = [
        (
            f"{usage.prompt_tokens} prompt{f' ({usage.cached_tokens} cached)' if usage.cached_tokens else ''}"
            f" + {usage.completion_tokens}{cap} reply tokens"
        ),
        f"first token {usage.time_to_first_token:.2f} s",
        f"{usage.tokens_per_second:.1f} tok/s",
    ]
    if usage.draft_tokens:
        parts.append(f"{usage.accepted_tokens}/{usage.draft_tokens} drafted tokens accepted")
    if context_used is not None and context_size:
        parts.append(f"context {context_used}/{context_size}")
    if usage.finish_reason not in ("stop", ""):
        parts.append(usage.finish_reason)
    return " · ".join(parts)


def osc52(text: str) -> str:
    """The OSC 52 sequence that puts ``text`` on the terminal's clipboard (it travels over SSH).

    Inside tmux the sequence is also sent wrapped for passthrough, for a tmux with
    ``set-clipboard`` off but ``allow-passthrough`` on.
    """
    import base64

    sequence = "\x1b]52;c;" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "\x07"
    if os.environ.get("TMUX"):
        sequence += "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"
    return sequence


# ---------------------------------------------------------------- what the chat shows besides replies


def say(env: Env, text: str, *, json_events: bool = False) -> None:
    """What a command was asked to show, on stdout, wrapped at words on a terminal (an ``info``
    event with ``--json``). A closed stdout raises ``OutputClosed``."""
    if json_events:
        write_event(env.stdout, {"type": "info", "text": text})
        return
    if env.stdout_isatty:  # a terminal breaks words; wrap them whole
        text = wrap_words(text, env.console().width)
    try:
        print(text, file=env.stdout, flush=True)
    except BrokenPipeError:
        raise OutputClosed from None


def hint(env: Env, text: str) -> None:
    """A one-line hint answering what was typed (an unknown command, nothing to undo): dim, on
    stderr, wrapped at words on a terminal; silent with ``--quiet``, as notices are."""
    console = env.err_console
    if env.stderr_isatty:
        text = wrap_words(text, console.width)
    console.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)


def show_exchanges(env: Env, exchanges: Sequence[tuple[str, str, bool]], *, prompt: str, plain: bool, json_events: bool = False) -> None:
    """Stored (user, reply, interrupted) exchanges as they looked: ``prompt`` and the user's text,
    then the reply, Markdown when stdout is styled and ``plain`` is off."""
    if env.stdout_isatty and not env.raw:  # stored replies may hold a model's escape sequences
        from gptcli.textio import sanitize_terminal

        exchanges = [(sanitize_terminal(user), sanitize_terminal(reply), cut) for user, reply, cut in exchanges]
    if plain or not env.styled_output():
        for user, reply, cut in exchanges:
            say(env, prompt + user, json_events=json_events)
            say(env, reply + (" (interrupted)" if cut else ""), json_events=json_events)
        return
    from rich.text import Text

    console = env.console()
    for user, reply, cut in exchanges:
        console.print(Text(prompt + user, style="bold"))
        if reply.strip():
            console.print(reply_markdown(reply))
        if cut:
            console.print(Text("(interrupted)", style="dim"))
