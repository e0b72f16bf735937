"""Progress on the terminal: a count of things done, and a document's chunks (a bar, a preview of the reply, the text above them)."""

from __future__ import annotations

import os
from types import TracebackType
from typing import IO, Any, Self

from gptcli.render import Env, OutputClosed


def _same_terminal(a: IO[str], b: IO[str]) -> bool:
    try:
        return a.isatty() and b.isatty() and os.fstat(a.fileno()).st_rdev == os.fstat(b.fileno()).st_rdev
    except (AttributeError, OSError, ValueError):
        return False


def _flush(stream: IO[str]) -> None:
    flush = getattr(stream, "flush", None)
    if flush is not None:
        flush()


def count_progress(env: Env) -> Any:
    """A Rich progress bar on stderr (a ``Progress``: done of total, time so far and left): on a
    terminal only (a log file gets no redraws), not with --quiet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=env.err_console,
        transient=True,
        disable=env.quiet or not env.stderr_isatty,
    )


class _Preview:
    """The reply being generated for the current chunk: its last lines, dim, erased when the chunk is done."""

    def __init__(self) -> None:
        self.text = ""

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        if self.text.strip():
            lines = self.text.rstrip("\n").split("\n")[-4:]
            yield Text("\n".join(lines), style="dim", overflow="ellipsis", no_wrap=True)


class DocumentProgress:
    """A document written chunk by chunk: progress on stderr when it is a terminal, and the text as it is finished.

    Used as a context manager: the display starts on entry; on exit it stops and writes what it held
    back (a last line without a newline), unless an exception ended the block. On a pipe (stderr not
    a terminal, or ``--quiet``) there is no bar and notices are plain lines, as ``Env.notice`` writes
    them. When the text goes to the same terminal as the bar, it is printed through the live display
    (above the bar) so neither garbles the other; a chunk's reply shows, dim, while it is being
    generated and is replaced by the finished text.
    """

    def __init__(self, env: Env, name: str, sink: IO[str] | None, *, stream: bool, preview: bool) -> None:
        self.env = env
        self.name = name
        self.sink = sink  # where the text goes: stdout, a file, or None (--json collects it)
        self.stream = stream
        self.held = ""
        self.live: Any = None
        self.progress: Any = None
        self.task: Any = None
        self.preview = _Preview()
        self.total_chunks = 0
        self.done_chunks = 0
        self.tokens = 0
        to_terminal = sink is env.stdout and env.stdout_isatty and stream
        self.progress_on = env.stderr_isatty and not env.quiet
        self.via_live = False
        self.console: Any = None
        if self.progress_on:
            self.console = env.err_console
            self.via_live = to_terminal and _same_terminal(env.stdout, env.stderr)
        elif to_terminal:
            self.console = env.console()
            self.via_live = True
        self.show_preview = self.via_live and preview

    # ---------------------------------------------------------------- the live display

    def __enter__(self) -> Self:
        if self.console is not None:
            from rich.console import Group
            from rich.live import Live
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

            parts: list[Any] = [self.preview] if self.show_preview else []
            if self.progress_on:
                self.progress = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.fields[chunks]}"),
                    TextColumn("{task.fields[tokens]} tokens"),
                    TimeRemainingColumn(),
                    console=self.console,
                    auto_refresh=False,
                )
                self.task = self.progress.add_task(self.name, total=None, chunks="", tokens=0)
                parts.append(self.progress)
            self.live = Live(
                Group(*parts),
                console=self.console,
                refresh_per_second=8,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.live.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close(finished=kind is None)

    # ---------------------------------------------------------------- events

    def begin(self, chunks: int, source_tokens: int, cached: int) -> None:
        """The document's plan: ``chunks`` to write, ``source_tokens`` in them, ``cached`` already done."""
        self.total_chunks = chunks
        self.done_chunks = 0
        if self.progress is not None:
            self.progress.update(self.task, total=source_tokens or 1, completed=0, chunks=f"0/{self.total_chunks} chunks")
        if cached and not self.env.quiet:
            self.notice(f"resuming: {cached} of {self.total_chunks} chunks of {self.name} already translated")

    def attempt(self) -> None:
        """A chunk's reply starts (again): the preview is emptied."""
        self.preview.text = ""

    def token(self, text: str) -> None:
        """A piece of the reply being generated, for the preview."""
        if self.show_preview:
            self.preview.text += text

    def chunk_done(self, source_tokens: int, completion_tokens: int) -> None:
        """A chunk finished: the bar advances by its source tokens."""
        self.done_chunks += 1
        self.tokens += completion_tokens
        self.preview.text = ""
        if self.progress is not None:
            self.progress.update(
                self.task,
                advance=source_tokens,
                chunks=f"{self.done_chunks}/{self.total_chunks} chunks",
                tokens=f"{self.tokens:,}",
            )
            self.live.refresh()

    # ---------------------------------------------------------------- text

    def write(self, text: str) -> None:
        """Finished text of the document: to its sink now (streaming), or when the display closes."""
        if not text or self.sink is None:
            return
        if not self.stream:
            self.held += text
            return
        if self.via_live and self.live is not None:
            from rich.text import Text

            text, self.held = (self.held + text), ""
            cut = text.rfind("\n") + 1
            text, self.held = text[:cut], text[cut:]
            if text:
                self.live.console.print(Text(text.expandtabs(4)), end="", soft_wrap=True, markup=False, highlight=False)
            return
        try:
            self.sink.write(text)
            _flush(self.sink)
        except BrokenPipeError:
            raise OutputClosed from None

    def notice(self, text: str) -> None:
        """A dim line above the bar (or ``Env.notice`` when there is none)."""
        if self.live is not None:
            self.live.console.print(text, style="dim", markup=False, highlight=False)
        else:
            self.env.notice(text)

    def close(self, finished: bool) -> None:
        """Stop the live display; when ``finished``, write what was held back (a last line without a newline)."""
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.held and self.sink is not None and finished:
            text, self.held = self.held, ""
            if self.sink is self.env.stdout and self.env.stdout_isatty and not text.endswith("\n"):
                text += "\n"  # the prompt starts on its own line
            self.sink.write(text)
            _flush(self.sink)
