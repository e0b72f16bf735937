"""Where output goes: the terminal and its streams (``Env``), and the errors of writing to them."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any

from rich.console import Console

from gptcli.errors import GptcliError


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


def output_error(exc: OSError) -> OutputFailed:
    return OutputFailed(f"cannot write to standard output: {exc.strerror or exc}")


def write_out(stream: IO[str], text: str) -> None:
    """``text`` on ``stream``, flushed; a closed pipe raises ``OutputClosed``, another failure (a full disk) ``OutputFailed``."""
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        raise OutputClosed from None
    except OSError as exc:
        raise output_error(exc) from None
