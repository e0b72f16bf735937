"""Streaming Markdown on a terminal: settled blocks printed once, the growing tail redrawn."""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from gptcli.engines import Usage
from gptcli.render.env import OutputClosed


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
        widths = _cell_widths(lines)
        for cells in reversed(widths):
            budget -= max(1, -(-cells // narrow))
            if budget < 0:
                break
            keep += 1
        first = len(lines) - max(1, keep)
        self._erase_live(width)
        self._print_lines(lines[first:])
        self.live_widths = widths[first:]
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
