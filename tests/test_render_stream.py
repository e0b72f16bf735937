"""Streamed Markdown: however a reply is cut into chunks, the screen ends as the whole rendered at once."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import threading
import time

import pyte
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from rich.console import Console

from gptcli.engines import Chunk, Usage
from gptcli.render import (
    Activity,
    MarkdownRenderer,
    osc52,
    render_stream,
    reply_markdown,
    settle,
)

DOCS = [
    # a loose list with a continuation, nested bullets, a fence, reference links, a table, a rule
    (
        "# Title\n\nText with `code` and <<Favorites>> and List<String>.\n\n- one\n\n  continued\n- two\n  - nested a\n"
        "  - nested b\n\n1. first\n2. second\n\n```python\ndef f():\n    return 1\n```\n\n<details>\nSee [the docs][1].\n"
        "</details>\n\n---\n| a | b |\n|---|---|\n| 1 | 2 |\n\n[1]: http://example.com\n"
    ),
    "Intro\n\n" + "\n".join(f"- item {i} with words enough to wrap in a narrow window" for i in range(40)) + "\n\nEnd.",
    "```\n" + "\n".join(f"line {i}" for i in range(100)) + "\n```\nafter the fence\n\n> a quote\n> more\n\nHeading\n=======\n\ntext",
    "Setext\n---\nPara one\nstill para\n\n    indented code\n\n* a\n* b\n\n***\n\nlast [x] words",
]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen_lines(data: str, width: int) -> list[str]:
    screen = pyte.Screen(width, 800)
    pyte.Stream(screen).feed(data.replace("\r\n", "\n").replace("\n", "\r\n"))
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def whole(doc: str, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=width, color_system="truecolor").print(reply_markdown(doc))
    return screen_lines(out.getvalue(), width)


def streamed(doc: str, cuts: list[int], width: int, height: int = 12, refresh: float = 0) -> list[str]:
    out = _Terminal()
    renderer = MarkdownRenderer(Console(file=out, force_terminal=True, width=width, height=height, color_system="truecolor"))
    renderer.REFRESH = refresh  # 0: redraw the live area at every chunk, the hardest case for the screen
    start = 0
    for cut in sorted(set(cuts)) + [len(doc)]:
        renderer.feed(doc[start:cut])
        start = max(start, cut)
    renderer.finish(None)
    return screen_lines(out.getvalue(), width)


@hyp_settings(max_examples=30, deadline=None)
@given(doc=st.sampled_from(DOCS), width=st.sampled_from([40, 100]), data=st.data())
def test_a_streamed_reply_ends_as_the_whole_rendered_at_once(doc, width, data):
    cuts = data.draw(st.lists(st.integers(0, len(doc)), max_size=60))
    assert streamed(doc, cuts, width) == whole(doc, width)


def test_word_by_word_like_a_model():
    for doc in DOCS:
        cuts = [m.end() for m in re.finditer(r"\S+\s*", doc)]
        assert streamed(doc, cuts, 60, refresh=MarkdownRenderer.REFRESH) == whole(doc, 60)


def test_html_like_text_is_shown_as_written():
    shown = "\n".join(whole("Use <<Favorites>>, a List<String> and <details> here.\n\n<div>block</div>", 80))
    assert "<<Favorites>>" in shown and "List<String>" in shown and "<details>" in shown and "<div>block</div>" in shown


def test_settle_keeps_the_last_block_and_blocks_that_may_still_change():
    assert settle("para\n\n- a\n- b\n").point == len("para\n\n")  # the list may still grow
    assert settle("para\n\n```\ncode\n\nmore code\n").point == len("para\n\n")  # an open fence holds its blank lines
    assert settle("a [link][1] here\n\nnext\n\nthird\n").point == 0  # a definition may come later
    assert settle("one\n\ntwo\n\nthree").point == len("one\n\n")  # the unfinished last line is not read


def test_the_live_area_never_outgrows_the_window():
    """A 100-line block in a 12-row window: each redraw erases what it drew, never more than fits."""
    out = _Terminal()
    renderer = MarkdownRenderer(Console(file=out, force_terminal=True, width=40, height=12))
    renderer.REFRESH = 0
    for i in range(100):
        renderer.feed(f"{'```' if i == 0 else ''}\nline {i}")
        assert len(renderer.live_widths) <= 12 * 2 // 3
    renderer.finish(None)
    assert "..." not in out.getvalue()


def test_osc52_carries_the_text_in_base64(monkeypatch):
    monkeypatch.delenv("TMUX", raising=False)
    assert osc52("héllo") == "\x1b]52;c;aMOpbGxv\x07"
    monkeypatch.setenv("TMUX", "/tmp/tmux-1/default,1,0")
    assert osc52("x").startswith("\x1b]52;c;eA==\x07\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\")


class _Timed(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[tuple[float, str]] = []

    def write(self, data: str) -> int:
        self.times.append((time.perf_counter(), data))
        return super().write(data)


def test_ctrl_c_shows_stopping_at_once_while_the_model_is_busy_in_c_code():
    """The model reads a prompt inside C code, where Python's handler waits; the spinner answers at once."""
    out = _Timed()
    activity = Activity(out, "reading 4000 tokens", interval=0.02)
    activity.QUIET = 0
    pressed: list[float] = []

    def press() -> None:
        pressed.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    started = time.perf_counter()
    hashlib.pbkdf2_hmac("sha256", b"x", b"y", 100_000)
    rounds = int(100_000 * 1.2 / max(time.perf_counter() - started, 1e-3))  # about 1.2 s on this machine

    def busy_chunks():
        threading.Timer(0.3, press).start()
        hashlib.pbkdf2_hmac("sha256", b"x", b"y", rounds)  # in C, no signal checks
        yield Chunk("never shown", Usage())

    reply = render_stream(busy_chunks(), MarkdownRenderer(Console(file=io.StringIO())), activity)
    returned = time.perf_counter()
    stopping = [when for when, data in out.times if "stopping…" in data]
    assert "reading 4000 tokens" in out.getvalue()
    assert stopping and stopping[0] - pressed[0] < 0.3, "stopping… should show at once"
    assert returned - pressed[0] > stopping[0] - pressed[0] + 0.2, "... well before Python's handler could run"
    assert reply.interrupted and reply.text == ""
    assert out.getvalue().endswith("\r\x1b[K"), "the line is erased when the reply ends"


@pytest.mark.parametrize("width", [40, 100])
def test_a_reply_split_anywhere_settles_no_block_twice(width):
    doc = DOCS[0]
    lines = streamed(doc, list(range(0, len(doc), 3)), width)
    assert sum("Title" in line for line in lines) == 1 and sum("second" in line for line in lines) == 1
