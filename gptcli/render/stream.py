"""Streaming one reply: the activity line before its first token, Ctrl-C, stats, the clipboard escape."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from gptcli.engines import Chunk, Usage
from gptcli.errors import GptcliError, ReplyCut
from gptcli.render.env import OutputClosed, OutputFailed
from gptcli.render.renderers import Renderer


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
