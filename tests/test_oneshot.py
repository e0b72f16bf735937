"""ask and draft on the fake engine: input gathering, templates, output modes, errors."""

from __future__ import annotations

import json

import pyte


def terminal_screen(output: str, columns: int = 100, lines: int = 200) -> str:
    """What a terminal shows after receiving ``output`` (cursor moves and erasures applied)."""
    screen = pyte.Screen(columns, lines)
    pyte.Stream(screen).feed(output.replace("\n", "\r\n"))
    return "\n".join(line.rstrip() for line in screen.display).strip()


def test_ask_streams_plain_text_with_final_newline(cli, fake_engine):
    result = cli(["ask", "What is GGUF?"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from the fake engine.\n"
    assert "\x1b[" not in result.stdout
    assert fake_engine.calls[0][-1] == {"role": "user", "content": "What is GGUF?"}


def test_ask_puts_piped_material_after_the_prompt(cli, fake_engine):
    result = cli(["ask", "summarize this"], stdin="Meeting moved to Friday.\n")
    assert result.exit_code == 0, result.stderr
    user = fake_engine.calls[0][-1]["content"]
    assert user.startswith("summarize this") and "Meeting moved to Friday." in user


def test_ask_without_any_input_is_a_clear_error(cli, fake_engine):
    result = cli(["ask"], stdin="   \n")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: nothing to ask")
    assert "Traceback" not in result.stderr
    assert fake_engine.calls == []


def test_draft_reads_notes_and_fills_variables(cli, fake_engine):
    result = cli(["draft", "an email to the team", "-v", "tone=formal"], stdin="- launch moved to May 3\n")
    assert result.exit_code == 0, result.stderr
    system, user = fake_engine.calls[0][0]["content"], fake_engine.calls[0][-1]["content"]
    assert "formal" in system
    assert "an email to the team" in user and "launch moved to May 3" in user


def test_draft_without_notes_is_an_error(cli, fake_engine):
    result = cli(["draft"])
    assert result.exit_code == 1
    assert "no input for 'draft'" in result.stderr


def test_draft_unknown_variable_is_an_error(cli, fake_engine):
    result = cli(["draft", "-v", "colour=red"], stdin="notes")
    assert result.exit_code == 1
    assert "has no variable 'colour'" in result.stderr


def test_json_output_is_chunk_events_then_done(cli, fake_engine):
    result = cli(["ask", "hi", "--json"])
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["type"] for e in events[:-1]] == ["chunk"] * (len(events) - 1)
    assert events[-1]["type"] == "done"
    assert events[-1]["text"] == "Hello from the fake engine."
    assert events[-1]["usage"]["completion_tokens"] == 5
    for name in ("time_to_first_token", "total_time"):  # seconds to the millisecond, not 15 decimals
        value = events[-1]["usage"][name]
        assert isinstance(value, float) and value == round(value, 3)


def test_stats_go_to_stderr(cli, fake_engine):
    result = cli(["ask", "hi", "--stats"])
    assert result.stdout == "Hello from the fake engine.\n"
    assert "tok/s" in result.stderr and "first token" in result.stderr


def test_sampling_flags_reach_the_engine(cli, fake_engine):
    cli(["ask", "hi", "--temperature", "0", "--top-k", "5", "--seed", "7", "-n", "12"])
    s = fake_engine.samplings[0]
    assert (s.temperature, s.top_k, s.seed, s.max_tokens) == (0.0, 5, 7, 12)


def test_out_of_range_sampling_is_a_usage_error(cli, fake_engine):
    result = cli(["ask", "hi", "--top-p", "2"])
    assert result.exit_code == 2
    assert "--top-p" in result.stderr and fake_engine.calls == []


def test_markdown_is_rendered_on_a_terminal(cli, fake_engine):
    fake_engine.replies = ["# Title\n\nSome **bold** text.\n\n- item one\n- item two"]
    result = cli(["ask", "hi"], tty=True)
    assert result.exit_code == 0
    screen = terminal_screen(result.stdout)
    assert "**bold**" not in screen  # rendered, not raw
    assert "Some bold text." in screen and "item two" in screen
    assert screen.count("item one") == 1 and screen.count("Title") == 1


def test_version(cli):
    result = cli(["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("gptcli ")
