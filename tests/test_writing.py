"""summarize, rewrite, proofread, reply and complete on the fake engine: input, variables, output."""

from __future__ import annotations

import json

import pytest


@pytest.mark.parametrize(
    "command, marker",
    [
        ("summarize", "summarize"),
        ("rewrite", "rewrite"),
        ("proofread", "proofread"),
        ("reply", "message i received"),
    ],
)
def test_writing_commands_read_stdin_into_their_template(cli, fake_engine, command, marker):
    result = cli([command], stdin="The launch {moves} to May 3.\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from the fake engine.\n"
    messages = fake_engine.calls[0]
    assert messages[0]["role"] == "system"
    assert marker in messages[-1]["content"].lower() or marker in messages[0]["content"].lower()
    assert "The launch {moves} to May 3." in messages[-1]["content"]


@pytest.mark.parametrize("command", ["summarize", "rewrite", "proofread", "reply"])
def test_writing_commands_without_input_are_an_error(cli, fake_engine, command):
    result = cli([command])
    assert result.exit_code == 1
    assert f"no input for '{command}'" in result.stderr and fake_engine.calls == []


def test_instructions_argument_and_variables(cli, fake_engine):
    result = cli(["rewrite", "make it friendlier", "-v", "goal=shorter", "-v", "tone=casual"], stdin="Dear sir.")
    assert result.exit_code == 0, result.stderr
    system, user = fake_engine.calls[0][0]["content"], fake_engine.calls[0][-1]["content"]
    assert "Make it shorter" in system and "casual" in system
    assert user.startswith("make it friendlier") and "Dear sir." in user


def test_reply_puts_the_gist_and_the_received_message_in_the_prompt(cli, fake_engine):
    result = cli(["reply", "yes, Friday at 10 works", "-v", "tone=warm"], stdin="Can we meet this week?")
    assert result.exit_code == 0, result.stderr
    user = fake_engine.calls[0][-1]["content"]
    assert "yes, Friday at 10 works" in user and "Can we meet this week?" in user
    assert "warm" in fake_engine.calls[0][0]["content"]


def test_summarize_reads_a_file(cli, fake_engine, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# Minutes\n\nAnna writes the docs.\n", encoding="utf-8")
    result = cli(["summarize", "--file", str(notes), "-v", "format=bullet points"])
    assert result.exit_code == 0, result.stderr
    assert "Anna writes the docs." in fake_engine.calls[0][-1]["content"]
    assert "bullet points" in fake_engine.calls[0][0]["content"]


def test_template_sampling_defaults_apply(cli, fake_engine):
    cli(["proofread"], stdin="Teh cat")
    assert fake_engine.samplings[0].temperature == pytest.approx(0.1)


def test_unknown_variable_on_a_writing_command(cli, fake_engine):
    result = cli(["summarize", "-v", "colour=red"], stdin="text")
    assert result.exit_code == 1 and "has no variable 'colour'" in result.stderr


def test_missing_file(cli, fake_engine, tmp_path):
    result = cli(["proofread", "--file", str(tmp_path / "nope.txt")])
    assert result.exit_code == 1 and "no such file" in result.stderr


# ---------------------------------------------------------------- complete

@pytest.fixture
def no_chat(fake_engine, monkeypatch):
    """The fake engine, failing the test if anything goes through the chat path."""
    monkeypatch.setattr(fake_engine, "stream", lambda *a, **k: pytest.fail("complete must not use a chat template"))
    return fake_engine


def test_complete_sends_the_raw_text(cli, no_chat):
    no_chat.replies = [" blue and wide."]
    result = cli(["complete", "The sky is"])
    assert result.exit_code == 0, result.stderr
    assert no_chat.calls == [[{"role": "user", "content": "The sky is"}]]
    assert result.stdout == " blue and wide.\n"


def test_complete_echo_prints_the_text_first(cli, no_chat):
    no_chat.replies = [" blue."]
    result = cli(["complete", "The sky is", "--echo"])
    assert result.stdout == "The sky is blue.\n"


def test_complete_reads_stdin_without_its_final_newline(cli, no_chat):
    result = cli(["complete"], stdin="Once upon a time\n")
    assert result.exit_code == 0
    assert no_chat.calls[0][0]["content"] == "Once upon a time"


def test_complete_is_never_markdown_rendered(cli, no_chat):
    no_chat.replies = ["**bold** text"]
    result = cli(["complete", "x"], tty=True)
    assert "**bold** text" in result.stdout


def test_complete_stop_strings_and_sampling_reach_the_engine(cli, no_chat):
    cli(["complete", "1, 2, 3,", "--stop", "\n", "--stop", "10", "-n", "9", "--temperature", "0"])
    sampling = no_chat.samplings[0]
    assert sampling.stop == ("\n", "10") and sampling.max_tokens == 9 and sampling.temperature == 0


def test_complete_json(cli, no_chat):
    no_chat.replies = [" blue."]
    events = [json.loads(line) for line in cli(["complete", "The sky is", "--json"]).stdout.splitlines()]
    assert events[-1]["type"] == "done" and events[-1]["text"] == " blue."


def test_complete_needs_text(cli, no_chat):
    result = cli(["complete"], stdin="")
    assert result.exit_code == 1 and "nothing to complete" in result.stderr


def test_complete_refuses_text_twice(cli, no_chat):
    result = cli(["complete", "a"], stdin="b")
    assert result.exit_code == 2 and "not both" in result.stderr


@pytest.mark.parametrize("command", ["support", "summarize", "rewrite", "proofread", "reply", "complete"])
def test_help_has_a_summary_and_an_example(cli, capsys, command):
    assert cli([command, "--help"]).exit_code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and "--max-tokens" in out
