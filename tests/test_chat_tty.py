"""The chat in a real terminal (a pseudo-terminal read by pyte, and tmux) with the scripted fake engine.

Long replies, resizing, history search, the editor, the clipboard, /continue and the spinner, as a
person at a 40- or 100-column terminal meets them.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pyte
import pytest
from rich.console import Console

from gptcli.chat.handlers import CONTINUE_PROMPT
from gptcli.render import reply_markdown
from gptcli.store import ConversationStore
from tests.conftest import ROOT

PROMPT_READY = "\x1b[?2004h"  # prompt-toolkit turns bracketed paste on as each prompt starts
PROMPT_ACCEPTED = "\x1b[?2004l"  # ... and off when Enter sends the line
ROWS = 30
CODE = "\n".join(f"print('line {i:03d}')" for i in range(1, 101))
CODE_REPLY = f"Here is the code:\n\n```python\n{CODE}\n```\n\nThat is all."
LIST_REPLY = "A list:\n\n" + "\n".join(f"- item {i} with some words that wrap in a narrow window" for i in range(1, 41)) + "\n\nDone."


def fake_env(replies: list[str], *, delay: float = 0.0, first_delay: float = 0.0, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color")
    for name in ("COLUMNS", "LINES", "DISPLAY", "WAYLAND_DISPLAY", "TMUX", "VISUAL", "EDITOR"):
        env.pop(name, None)  # the terminal's own size; no clipboard tool; no editor but the test's
    env.update(FAKE_REPLIES=json.dumps(replies), FAKE_DELAY=str(delay), FAKE_FIRST_DELAY=str(first_delay), **extra)
    return env


class Terminal:
    """``gptcli chat`` (fake engine) in a pseudo-terminal of ``columns`` x 30, with every write kept."""

    def __init__(self, columns: int, replies: list[str], *args: str, program: list[str] | None = None, **env: object) -> None:
        self.columns = columns
        self.writes: list[tuple[float, str]] = []
        program = program or [sys.executable, "-m", "tests.fake_chat"]
        self.child = pexpect.spawn(
            program[0],
            [*program[1:], "chat", *args],
            env=fake_env(replies, **env),  # type: ignore[arg-type]
            cwd=str(ROOT),
            encoding="utf-8",
            timeout=120,
            dimensions=(ROWS, columns),
        )
        self.child.logfile_read = self  # type: ignore[assignment]
        self.wait_for_prompt()

    def write(self, data: str) -> None:  # pexpect's logfile interface
        self.writes.append((time.perf_counter(), data))

    def flush(self) -> None:
        pass

    def wait_for_prompt(self) -> None:
        self.child.expect_exact(PROMPT_READY)

    def enter(self, line: str) -> str:
        start = len(self.writes)
        self.child.send(line + "\r")
        self.wait_for_prompt()
        return self.output(start)

    def output(self, start: int = 0) -> str:
        return "".join(data for _, data in self.writes[start:])

    def scrollback(self, start: int = 0) -> list[str]:
        """Everything shown, as a terminal tall enough never to scroll would show it."""
        screen = pyte.Screen(self.columns, 3000)
        pyte.Stream(screen).feed(self.output(start))
        return [line.rstrip() for line in screen.display]

    def leave(self) -> int:
        self.child.sendeof()
        self.child.expect(pexpect.EOF)
        self.child.close()
        return self.child.exitstatus


def rendered_whole(markdown: str, columns: int) -> list[str]:
    """The reply's Markdown rendered at once, as the lines a terminal shows."""
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=columns, color_system="truecolor").print(reply_markdown(markdown))
    screen = pyte.Screen(columns, 500)
    pyte.Stream(screen).feed(out.getvalue().replace("\n", "\r\n"))
    lines = [line.rstrip() for line in screen.display]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def plain(output: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", output)


def contains_run(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i : i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def stored_user_messages() -> list[str]:
    with ConversationStore.open() as store:
        info = store.latest_session()
        return [m.content for m in store.messages(info.id) if m.role == "user"] if info else []


@pytest.mark.parametrize("columns", [40, 100])
@pytest.mark.parametrize("reply", [CODE_REPLY, LIST_REPLY], ids=["code-block", "list"])
def test_a_block_taller_than_the_window_streams_without_freezing_and_ends_whole(columns, reply):
    term = Terminal(columns, [reply], delay=0.004)
    start = len(term.writes)
    term.enter("show me")
    # as a 30-row window saw it, write by write: the newest lines keep coming, never a '...'
    screen = pyte.Screen(columns, ROWS)
    stream = pyte.Stream(screen)
    newest: list[int] = []
    for _, data in term.writes[start:]:
        stream.feed(data)
        shown = [int(n) for n in re.findall(r"(?:line|item) (\d+)", "\n".join(screen.display))]
        if shown:
            newest.append(max(shown))
        assert not any(line.strip() in ("...", "…") for line in screen.display), "Rich Live's overflow ellipsis"
    total = 100 if reply is CODE_REPLY else 40
    assert len(set(newest)) >= 8, "the reply froze instead of showing its newest lines"
    assert any(ROWS < n < total for n in newest), "lines beyond the first screenful showed before the end"
    # the scrollback: the reply exactly as rendering it whole gives, once
    scrollback = term.scrollback(start)
    assert contains_run(scrollback, rendered_whole(reply, columns))
    numbers = re.findall(r"(?:line|item) (\d+)", "\n".join(scrollback))
    assert [int(n) for n in numbers] == list(range(1, len(numbers) + 1)) and len(numbers) in (100, 40)
    assert term.leave() == 0


@pytest.mark.parametrize("sizes", [(100, 40, 70), (40, 100, 60)])
def test_a_resize_during_a_reply_leaves_clean_scrollback(tmp_path, sizes):
    """tmux rewraps lines on a resize, as most terminals do: no stale copy may be left behind.

    Needs tmux installed (``apt-get install tmux``).
    """
    first, *later = sizes
    server = ["tmux", "-L", f"gptcli-{os.getpid()}-{first}", "-f", "/dev/null"]
    reply = CODE_REPLY.replace("That is all.", LIST_REPLY)
    env = fake_env([reply], delay=0.004)
    command = f"{sys.executable} -m tests.fake_chat chat --no-history"
    subprocess.run([*server, "new-session", "-d", "-x", str(first), "-y", str(ROWS), "-c", str(ROOT), command], env=env, check=True)
    try:
        pane = [*server, "capture-pane", "-p", "-J", "-S", "-", "-E", "-"]
        deadline = time.monotonic() + 20
        while "Ctrl-D leaves" not in subprocess.run(pane, capture_output=True, text=True, check=False).stdout:
            assert time.monotonic() < deadline, "the chat did not start"
            time.sleep(0.1)
        subprocess.run([*server, "send-keys", "show me", "Enter"], check=True)
        for width in later:
            time.sleep(0.6)  # mid-reply (it takes about 1.5 s)
            subprocess.run([*server, "resize-window", "-x", str(width), "-y", str(ROWS)], check=True)
        deadline = time.monotonic() + 20
        while "Done." not in (text := subprocess.run(pane, capture_output=True, text=True, check=False).stdout):
            assert time.monotonic() < deadline, "the reply did not end"
            time.sleep(0.2)
    finally:
        subprocess.run([*server, "kill-server"], check=False)
    code_lines = re.findall(r"print\('line (\d+)'\)", text)
    items = re.findall(r"item (\d+) with", text)
    assert [int(n) for n in code_lines] == list(range(1, 101)), "every code line once, in order"
    assert [int(n) for n in items] == list(range(1, 41)), "every list item once, in order"
    assert text.count("Here is the code:") == 1 and text.count("Done.") == 1


def test_ctrl_r_then_enter_sends_the_match_and_up_filters_by_what_is_typed():
    term = Terminal(100, ["ok"])
    term.enter("alpha one")
    term.enter("beta two")
    term.enter("alpine three")
    term.enter("\x12alp\x12")  # Ctrl-R, 'alp' finds 'alpine three', Ctrl-R again 'alpha one', Enter sends it
    assert not any("i-search" in line.lower() for line in term.scrollback()[-3:]), "the screen must leave the search"
    term.child.send("be")
    term.child.send("\x1b[A")  # Up with 'be' typed: only lines starting with it
    term.enter("")
    assert stored_user_messages() == ["alpha one", "beta two", "alpine three", "alpha one", "beta two"]
    assert term.leave() == 0


def test_ctrl_x_ctrl_e_and_edit_open_the_editor_and_send_what_it_saved(tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "%s\\nwritten in the editor\\n" "$(cat "$1")" > "$1"\n')
    editor.chmod(0o755)
    term = Terminal(100, ["ok"], EDITOR=str(editor))
    term.child.send("a draft")
    term.child.send("\x18\x05")  # Ctrl-X Ctrl-E
    for _ in range(2):  # the prompt steps aside for the editor, comes back, and sends what it saved
        term.child.expect_exact(PROMPT_ACCEPTED)
        term.wait_for_prompt()
    term.enter("/edit from the command")
    assert stored_user_messages() == ["a draft\nwritten in the editor", "from the command\nwritten in the editor"]
    assert term.leave() == 0


def test_edit_without_editor_set_opens_vi_and_a_failing_editor_keeps_what_it_saved(tmp_path):
    # no $VISUAL or $EDITOR: /edit and Ctrl-X Ctrl-E open vi (the one found on PATH), as `config edit` and `templates edit` do
    folder = tmp_path / "bin"
    folder.mkdir()
    vi = folder / "vi"
    vi.write_text('#!/bin/sh\nprintf "%s\\nwritten in vi\\n" "$(cat "$1")" > "$1"\n')
    vi.chmod(0o755)
    term = Terminal(100, ["ok"], PATH=f"{folder}{os.pathsep}{os.environ['PATH']}")
    term.enter("/edit from the command")
    term.child.send("a draft\x18\x05")  # Ctrl-X Ctrl-E: the same editor (not prompt-toolkit's /usr/bin/editor)
    for _ in range(2):
        term.child.expect_exact(PROMPT_ACCEPTED)
        term.wait_for_prompt()
    assert stored_user_messages() == ["from the command\nwritten in vi", "a draft\nwritten in vi"]

    vi.write_text('#!/bin/sh\nprintf "half a thought\\n" > "$1"\nexit 3\n')
    for keys in ("/edit\r", "typed\x18\x05"):
        start = len(term.writes)
        term.child.send(keys)
        term.child.expect_exact(PROMPT_ACCEPTED)
        term.wait_for_prompt()
        screen = " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", term.output(start)).split())
        kept = re.search(r"error: the editor 'vi' exited with status 3; what it saved is kept in (\S+\.md)", screen)
        assert kept is not None, screen
        assert Path(kept.group(1)).read_text() == "half a thought\n"  # nothing written is lost
        Path(kept.group(1)).unlink()
    term.enter("")  # the message typed before the editor failed is still at the prompt
    assert stored_user_messages()[2:] == ["typed"]  # and the chat goes on
    assert term.leave() == 0


def test_v_in_vi_normal_mode_opens_the_editor_and_sends_what_it_saved(tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "%s, edited\\n" "$(cat "$1")" > "$1"\n')
    editor.chmod(0o755)
    term = Terminal(100, ["ok"], EDITOR=str(editor), GPTCLI_VI_MODE="true")
    term.child.send("a draft\x1b")
    time.sleep(0.3)  # Esc alone (normal mode), not the start of an Alt- key
    term.child.send("v")
    for _ in range(2):
        term.child.expect_exact(PROMPT_ACCEPTED)
        term.wait_for_prompt()
    assert stored_user_messages() == ["a draft, edited"]
    assert term.leave() == 0


def test_copy_writes_the_osc52_sequence_of_the_reply_and_of_a_code_block():
    reply = "Use this:\n\n```sh\necho hello\n```\n\nand then:\n\n```\nls -l\n```"
    term = Terminal(100, [reply])
    term.enter("how?")
    whole = term.enter("/copy")
    assert f"\x1b]52;c;{base64.b64encode(reply.encode()).decode()}\x07" in whole
    assert "copied the last reply" in whole
    second = term.enter("/copy 2")
    assert f"\x1b]52;c;{base64.b64encode(b'ls -l').decode()}\x07" in second
    assert "error: the last reply has 2 code blocks" in plain(term.enter("/copy 3"))
    assert term.leave() == 0


def test_continue_carries_on_a_reply_cut_at_the_length_limit():
    words = " ".join(f"w{i}" for i in range(12))
    term = Terminal(100, [words, "and the rest"], "-n", "5")
    assert "nothing to continue" in term.enter("/continue")
    shown = term.enter("tell me")
    assert "reached its limit of 5 tokens" in shown and "/continue" in shown
    term.enter("/continue")
    assert stored_user_messages() == ["tell me", CONTINUE_PROMPT]
    assert "ended by itself" in term.enter("/continue")  # the continuation ended by itself
    assert term.leave() == 0


def test_a_spinner_shows_until_the_first_token_and_ctrl_c_before_it_saves_nothing():
    term = Terminal(100, ["finally an answer"], first_delay=1.5)
    start = len(term.writes)
    term.child.send("a question\r")
    term.child.expect(r"reading \d+ tokens · \d\.\d s")
    term.wait_for_prompt()
    shown = "\n".join(term.scrollback(start))
    assert "finally an answer" in shown and "reading" not in shown  # the spinner made way for the reply
    term.child.send("never answered\r")
    term.child.expect(r"reading \d+ tokens")
    term.child.sendintr()
    term.wait_for_prompt()
    assert "cancelled" in term.output(start) and "partial reply is kept" not in term.output(start)
    assert stored_user_messages() == ["a question"]
    assert term.leave() == 0


def test_help_and_notices_wrap_at_words_in_a_narrow_window():
    term = Terminal(40, ["ok"])
    start = len(term.writes)
    term.enter("/help")
    lines = [line for line in term.scrollback(start) if line.strip()]
    assert max(len(line) for line in lines) <= 40
    text = " ".join(" ".join(lines).split())
    for phrase in ("Regenerate the last reply.", "Carry on the last reply where it stopped", "Ctrl-D leaves"):
        assert phrase in text, phrase  # no word broken across lines
    assert term.leave() == 0


def test_stats_on_and_off_and_template_lists_them(isolated_home):
    term = Terminal(100, ["ok"])
    term.enter("/stats on")
    assert "tok/s" in term.enter("hi")
    term.enter("/stats off")
    assert "tok/s" not in term.enter("again")
    assert re.search(r"templates: .*\bask\b", term.enter("/template"))
    assert term.leave() == 0


def test_file_and_at_path_attach_a_text_file(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("the secret word is pumpkin\n")
    term = Terminal(100, ["ok"])
    assert "attached" in term.enter(f"/file {notes}")
    term.enter("what does it say?")
    term.enter(f"and @{notes} again")
    first, second = stored_user_messages()
    assert first.startswith("what does it say?\n\n") and "the secret word is pumpkin" in first
    assert second.startswith(f"and @{notes} again") and "pumpkin" in second
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    assert "not a text file" in term.enter(f"/file {binary}")
    assert term.leave() == 0


@pytest.mark.model
def test_a_real_reply_at_40_columns_ends_as_its_markdown_rendered_whole(gptcli_bin):
    """The embedded model's own reply, streamed token by token into a narrow window."""
    args = ("--ctx", "1024", "-n", "80", "--seed", "4", "--temperature", "0")
    term = Terminal(40, [], *args, program=[gptcli_bin])
    start = len(term.writes)
    term.enter("Write a short Python function that adds two numbers, then explain it in a list.")
    with ConversationStore.open() as store:
        info = store.latest_session()
        reply = store.messages(info.id)[-1].content
    assert reply.strip()
    assert contains_run(term.scrollback(start), rendered_whole(reply, 40))
    assert term.leave() == 0
