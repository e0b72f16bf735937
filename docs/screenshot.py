"""Regenerate docs/chat.svg: a real `gptcli chat` session, drawn by Rich.

Usage: .venv/bin/python docs/screenshot.py [--seed N]

Runs the installed `gptcli chat` with the embedded model in a pseudo-terminal (pexpect), replays
everything it printed on a virtual terminal screen (pyte), and has Rich export that screen as SVG:
what a user saw, colours and all, with nothing typed in by hand. pexpect and pyte come with the
test extra.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pexpect
import pyte
from rich.console import Console
from rich.style import Style
from rich.text import Text

COLS, ROWS = 92, 44
PROMPT_READY = "\x1b[?2004h"  # prompt-toolkit turns bracketed paste on as each prompt starts
TURNS = [
    "Give me three tips for naming git branches, as a short Markdown list.",
    "/tokens",
]
OUT = Path(__file__).resolve().parent / "chat.svg"


def rich_color(name: str) -> str | None:
    """pyte's colour name ('red', 'brightblue', 'ff8700', 'default') as Rich writes it."""
    if name == "default":
        return None
    if name.startswith("bright") and len(name) > 6:
        return f"bright_{name[6:]}"
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return f"#{name}"
    return name


def screen_text(screen: pyte.Screen) -> Text:
    """The screen's lines (trailing blank ones dropped) with their colours and weights."""
    last = max((y for y in range(screen.lines) if "".join(screen.buffer[y][x].data for x in range(screen.columns)).strip()), default=0)
    text = Text()
    for y in range(last + 1):
        row = screen.buffer[y]
        line = "".join(row[x].data for x in range(screen.columns)).rstrip()
        for x in range(len(line)):
            char = row[x]
            style = Style(
                color=rich_color(char.fg),
                bgcolor=rich_color(char.bg),
                bold=char.bold or None,
                italic=char.italics or None,
                underline=char.underscore or None,
                reverse=char.reverse or None,
            )
            text.append(char.data, style)
        text.append("\n")
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    gptcli = shutil.which("gptcli", path=str(Path(sys.executable).parent)) or "gptcli"
    home = tempfile.mkdtemp(prefix="gptcli-shot-")
    env = dict(os.environ, GPTCLI_HOME=home, TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS), PROMPT_TOOLKIT_NO_CPR="1")
    env.pop("NO_COLOR", None)
    screen = pyte.Screen(COLS, ROWS)
    stream = pyte.Stream(screen)

    class Feed(io.StringIO):
        def write(self, s: str) -> int:
            stream.feed(s)
            return len(s)

    child = pexpect.spawn(
        gptcli, ["chat", "--seed", str(args.seed), "-n", "160", "--stats"],
        env=env, dimensions=(ROWS, COLS), encoding="utf-8", timeout=120,
    )
    child.logfile_read = Feed()
    try:
        child.expect_exact(PROMPT_READY)
        for line in TURNS:
            child.send(line + "\r")
            child.expect_exact(PROMPT_READY)
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
        shutil.rmtree(home, ignore_errors=True)
    console = Console(record=True, width=COLS, file=io.StringIO(), force_terminal=True, color_system="truecolor")
    console.print(screen_text(screen), end="")
    console.save_svg(str(OUT), title="gptcli chat")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
