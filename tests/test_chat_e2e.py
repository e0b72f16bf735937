"""`gptcli chat` in a real pseudo-terminal (pexpect) with the real embedded model and history file."""

from __future__ import annotations

import os
import re
import time

import pexpect
import pyte
import pytest

from gptcli.store import ConversationStore

pytestmark = pytest.mark.model

PROMPT_READY = "\x1b[?2004h"  # prompt-toolkit turns bracketed paste on as each new prompt starts
PROMPT_ACCEPTED = "\x1b[?2004l"  # ... and off when Enter sends the line
COLUMNS, LINES = 100, 40


class Terminal:
    """The chat in a pseudo-terminal, with what a screen would show."""

    def __init__(self, gptcli_bin: str, *args: str) -> None:
        env = dict(os.environ, PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color", COLUMNS=str(COLUMNS))
        self.writes: list[tuple[float, str]] = []
        self.child = pexpect.spawn(
            gptcli_bin, ["chat", *args], env=env, encoding="utf-8", timeout=120, dimensions=(LINES, COLUMNS)
        )
        self.child.logfile_read = self  # type: ignore[assignment]
        self.wait_for_prompt()

    # pexpect's logfile interface: every piece the program writes
    def write(self, data: str) -> None:
        self.writes.append((time.perf_counter(), data))

    def flush(self) -> None:
        pass

    def wait_for_prompt(self, timeout: float = 120) -> None:
        self.child.expect_exact(PROMPT_READY, timeout=timeout)

    def enter(self, line: str) -> str:
        """Type ``line`` and Enter; return what was written until the next prompt."""
        start = len(self.writes)
        self.child.send(line + "\r")
        self.wait_for_prompt()
        return "".join(data for _, data in self.writes[start:])

    def screen(self) -> str:
        screen = pyte.Screen(COLUMNS, 2000)
        pyte.Stream(screen).feed("".join(data for _, data in self.writes))
        return "\n".join(line.rstrip() for line in screen.display).strip()

    def leave(self) -> int:
        self.child.sendeof()
        self.child.expect(pexpect.EOF, timeout=30)
        self.child.close()
        return self.child.exitstatus


def plain(output: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|[\x00-\x08\x0e-\x1f]", "", output)


def latest_messages() -> list[tuple[str, str, bool]]:
    with ConversationStore.open() as store:
        info = store.latest_session()
        assert info is not None
        return [(m.role, m.content, m.interrupted) for m in store.messages(info.id)]


def test_a_reply_streams_and_ctrl_d_exits_0(gptcli_bin):
    term = Terminal(gptcli_bin, "--ctx", "1024", "-n", "48", "--seed", "1")
    start = len(term.writes)
    output = term.enter("Name three colours.")
    pieces = [data for _, data in term.writes[start:] if plain(data).strip()]
    assert len(pieces) >= 3, "the reply should arrive in pieces as it is generated"
    assert re.search(r"[A-Za-z]{3,}", plain(output).replace("Name three colours.", ""))
    assert term.leave() == 0
    assert [r[0] for r in latest_messages()] == ["user", "assistant"]


def test_keys_typed_while_a_reply_streams_wait_for_the_next_prompt(gptcli_bin):
    term = Terminal(gptcli_bin, "--ctx", "1024", "-n", "24", "--seed", "2")
    term.child.send("Tell me about the moon.\r")
    term.child.expect_exact(PROMPT_ACCEPTED)
    term.child.send("and the sun?")  # typed ahead, no Enter yet
    term.wait_for_prompt()
    term.enter("")
    lines = term.screen().splitlines()
    at_prompt = [i for i, line in enumerate(lines) if line.startswith("› and the sun?")]
    assert at_prompt, "the typed-ahead text should be waiting at the next prompt"
    assert not any("and the sun?" in line for line in lines[: at_prompt[0]]), "it must not be echoed into the reply"
    assert [m[1] for m in latest_messages() if m[0] == "user"] == ["Tell me about the moon.", "and the sun?"]
    assert term.leave() == 0


def test_retry_undo_system_and_tokens(gptcli_bin):
    term = Terminal(gptcli_bin, "--ctx", "1024", "-n", "24", "--temperature", "1.0")
    term.enter("Say hello in one sentence.")
    first = latest_messages()[-1][1]
    tokens = plain(term.enter("/tokens"))
    match = re.search(r"context (\d+)/1024 tokens: system (\d+) \+ history (\d+) \(1 turn\); (\d+) left", tokens)
    assert match, tokens
    used, _, history, left = map(int, match.groups())
    assert history > 0 and used + left == 1024

    term.enter("/retry")
    messages = latest_messages()
    assert [r[0] for r in messages] == ["user", "assistant"]  # the reply was replaced, not added
    assert messages[0][1] == "Say hello in one sentence."
    assert "(1 turn)" in plain(term.enter("/tokens"))
    del first  # with temperature 1.0 the new reply may or may not differ; the store holds one exchange

    assert "removed the last exchange" in plain(term.enter("/undo"))
    assert "(0 turns)" in plain(term.enter("/tokens"))
    assert latest_messages() == []

    term.enter("/system You are a pirate. Answer in one short sentence.")
    assert "You are a pirate." in plain(term.enter("/system"))
    system_tokens = re.search(r"system (\d+)", plain(term.enter("/tokens")))
    assert system_tokens and int(system_tokens.group(1)) > 5
    term.enter("Who are you?")
    with ConversationStore.open() as store:
        info = store.latest_session()
        assert info is not None and info.system == "You are a pirate. Answer in one short sentence."
    assert term.leave() == 0


def test_ctrl_c_mid_reply_returns_to_the_prompt_and_keeps_the_partial_reply(gptcli_bin):
    term = Terminal(gptcli_bin, "--ctx", "2048", "-n", "1500", "--temperature", "0.8", "--seed", "3")
    term.child.send("Write a very long story about a dragon and a knight, with many chapters.\r")
    term.child.expect_exact(PROMPT_ACCEPTED)
    term.child.expect(r"[A-Za-z]+\W+[A-Za-z]+\W+[A-Za-z]+\W+[A-Za-z]+", timeout=90)  # the reply is arriving
    time.sleep(0.3)
    pressed = time.perf_counter()
    term.child.sendintr()
    term.wait_for_prompt(timeout=15)
    assert time.perf_counter() - pressed < 5, "Ctrl-C should stop the reply at once"
    screen = term.screen()
    assert "interrupted" in screen
    role, partial, interrupted = latest_messages()[-1]
    assert role == "assistant" and interrupted and partial.strip()
    assert partial.split()[0] in screen  # the partial reply stays on screen
    assert len(term.enter("/tokens")) > 0  # the chat goes on after the interruption
    assert term.leave() == 0


def test_a_chat_outgrowing_a_tiny_window_is_summarized_and_goes_on(run_gptcli):
    questions = ["Tell me about cats.", "Tell me about dogs.", "Tell me about birds.", "Tell me about fish.", "Which animals?"]
    proc = run_gptcli("chat", "--commands", "--ctx", "256", "-n", "32", "--seed", "1", input="\n".join([*questions, "/tokens"]) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert "context full" in proc.stderr  # said, never silent
    assert "error" not in proc.stderr
    budget = proc.stdout.strip().splitlines()[-1]
    assert re.match(r"context \d+/256 tokens: system \d+ \+ (summary \d+ \+ )?history", budget), budget
    assert "out of view (still stored)" in budget
    assert [m[1] for m in latest_messages() if m[0] == "user"] == questions  # the store keeps every turn
