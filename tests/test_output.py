"""Output rules for people and scripts: colour (flags, NO_COLOR, FORCE_COLOR, TERM=dumb), width, --quiet, JSON events."""

from __future__ import annotations

import json
import re

import pexpect
import pyte
import pytest

from tests.conftest import gptcli_executable

ESC = "\x1b["
SGR = re.compile(r"\x1b\[([0-9;]*)m")
ANY_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def colour_codes(text: str) -> list[str]:
    """The SGR parameters that set a colour (30-37, 90-97, 38;..), as opposed to bold or dim."""
    found = []
    for params in SGR.findall(text):
        parts = params.split(";")
        if any(p.isdigit() and (30 <= int(p) <= 37 or 90 <= int(p) <= 97 or p == "38") for p in parts):
            found.append(params)
    return found


def run_in_terminal(*args: str, env: dict[str, str] | None = None, columns: int = 100) -> tuple[int, str]:
    """Run the installed gptcli on a pseudo-terminal; returns (exit code, everything it showed)."""
    import os

    full = dict(os.environ)
    full.pop("COLUMNS", None)
    full.setdefault("TERM", "xterm-256color")
    full.update(env or {})
    child = pexpect.spawn(gptcli_executable(), list(args), env=full, encoding="utf-8", timeout=120, dimensions=(40, columns))
    output = child.read()
    child.close()
    return child.exitstatus if child.exitstatus is not None else 128 + (child.signalstatus or 0), output


# ---------------------------------------------------------------- colour: a pipe


def test_a_pipe_gets_no_escape_codes(run_gptcli):
    proc = run_gptcli("config", "show")
    assert proc.returncode == 0, proc.stderr
    assert ESC not in proc.stdout and ESC not in proc.stderr


def test_color_always_styles_a_pipe(run_gptcli):
    proc = run_gptcli("--color", "always", "config", "show")
    assert proc.returncode == 0, proc.stderr
    assert ESC in proc.stdout


def test_force_color_styles_a_pipe_unless_no_color(run_gptcli):
    assert ESC in run_gptcli("config", "show", env={"FORCE_COLOR": "1"}).stdout
    assert ESC not in run_gptcli("config", "show", env={"FORCE_COLOR": "1", "NO_COLOR": "1"}).stdout
    assert ESC not in run_gptcli("--color", "never", "config", "show", env={"FORCE_COLOR": "1"}).stdout


def test_the_color_setting_applies_and_the_flag_wins(run_gptcli, isolated_home):
    assert ESC in run_gptcli("config", "show", env={"GPTCLI_COLOR": "always"}).stdout
    (isolated_home / "config.toml").write_text('color = "always"\n')
    assert ESC in run_gptcli("config", "show").stdout
    assert ESC not in run_gptcli("--color", "never", "config", "show").stdout
    bad = run_gptcli("--color", "sometimes", "config", "show")
    assert bad.returncode == 2 and "error: --color must be auto, always or never" in bad.stderr
    assert "Traceback" not in bad.stderr


# ---------------------------------------------------------------- colour: a terminal


def test_a_terminal_gets_styling_and_color_never_removes_it():
    code, styled = run_in_terminal("config", "show")
    assert code == 0 and ESC in styled
    code, plain = run_in_terminal("--color", "never", "config", "show")
    assert code == 0 and ANY_ESCAPE.search(plain) is None


def test_term_dumb_gets_no_escape_codes():
    code, output = run_in_terminal("config", "show", env={"TERM": "dumb"})
    assert code == 0 and "temperature" in output
    assert ANY_ESCAPE.search(output) is None


def test_no_color_on_a_terminal_drops_colours():
    code, coloured = run_in_terminal("config", "set", "overflow", "squash")
    assert code == 1 and "error:" in coloured
    assert colour_codes(coloured), "an error on a terminal is red"
    code, uncoloured = run_in_terminal("config", "set", "overflow", "squash", env={"NO_COLOR": "1"})
    assert code == 1 and "error: invalid value 'squash'" in uncoloured
    assert colour_codes(uncoloured) == []


# ---------------------------------------------------------------- width


def visible_lines(output: str) -> list[str]:
    return [ANY_ESCAPE.sub("", line).rstrip() for line in output.splitlines()]


def test_width_comes_from_columns(run_gptcli):
    proc = run_gptcli("--color", "always", "config", "show", env={"COLUMNS": "32", "GPTCLI_BASE_URL": "http://127.0.0.1:8080/a/rather/long/path/v1"})
    assert proc.returncode == 0
    table = visible_lines(proc.stdout)[1:]
    assert max(len(line) for line in table) <= 32
    from gptcli.config import KEYS

    assert len(table) > len(KEYS) + 1  # the long value is folded onto more lines, not cut


def test_width_comes_from_the_terminal():
    code, output = run_in_terminal("config", "show", env={"GPTCLI_BASE_URL": "http://127.0.0.1:8080/a/rather/long/path/v1"}, columns=36)
    assert code == 0
    screen = pyte.Screen(200, 60)
    pyte.Stream(screen).feed(output)
    table = [line.rstrip() for line in screen.display if line.strip()][1:]
    assert table and max(len(line) for line in table) <= 36


# ---------------------------------------------------------------- --quiet


def test_quiet_silences_stats_and_notices_but_not_the_answer(cli, fake_engine):
    loud = cli(["ask", "hi", "--stats", "--no-history"])
    assert "tok/s" in loud.stderr
    quiet = cli(["-q", "ask", "hi", "--stats", "--no-history"])
    assert quiet.exit_code == 0
    assert quiet.stdout == "Hello from the fake engine.\n"
    assert quiet.stderr == ""


def test_quiet_never_silences_an_error(run_gptcli):
    loud = run_gptcli("config", "set", "top_k", "5")
    assert loud.returncode == 0 and loud.stderr.strip()
    quiet = run_gptcli("--quiet", "config", "set", "top_k", "6")
    assert quiet.returncode == 0 and quiet.stderr == ""
    failed = run_gptcli("-q", "config", "set", "top_k", "many")
    assert failed.returncode == 1 and failed.stderr.startswith("error: ")


# ---------------------------------------------------------------- JSON for scripts


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_error_is_an_event_with_the_exit_code(cli, fake_engine):
    result = cli(["ask", "hi", "--json", "-t", "no-such-template"])
    assert result.exit_code == 1
    events = json_lines(result.stdout)
    assert events == [{"type": "error", "message": events[0]["message"], "exit_code": 1}]
    assert "unknown template 'no-such-template'" in events[0]["message"]
    assert result.stderr.startswith("error: unknown template")  # the stderr line is still there


def test_json_usage_error_keeps_exit_code_two(cli, fake_engine):
    result = cli(["ask", "hi", "--json", "--temperature", "warm"])
    assert result.exit_code == 2
    (event,) = json_lines(result.stdout)
    assert event["type"] == "error" and event["exit_code"] == 2 and "--temperature" in event["message"]


def test_without_json_an_error_prints_nothing_on_stdout(cli, fake_engine):
    result = cli(["ask", "hi", "-t", "no-such-template"])
    assert result.exit_code == 1 and result.stdout == ""


def test_json_error_events_from_other_commands(run_gptcli, isolated_home):
    history = run_gptcli("history", "show", "zzzzzz", "--json")
    assert history.returncode == 1
    (event,) = json_lines(history.stdout)
    assert event["type"] == "error" and event["exit_code"] == 1 and "zzzzzz" in event["message"]
    (isolated_home / "config.toml").write_text("top_k = -1\n")
    config = run_gptcli("config", "show", "--json")
    assert config.returncode == 1
    assert json_lines(config.stdout)[0]["type"] == "error"
    assert "Traceback" not in history.stderr + config.stderr


def test_an_argument_after_double_dash_is_not_the_json_flag(cli, fake_engine):
    result = cli(["ask", "-t", "nope", "--", "--json"])
    assert result.exit_code == 1 and result.stdout == ""


@pytest.mark.model
def test_json_stream_schema_from_the_real_model(run_gptcli):
    proc = run_gptcli("--color", "always", "ask", "Say hello.", "--json", "-n", "8", "--seed", "3", "--no-history")
    assert proc.returncode == 0, proc.stderr
    events = json_lines(proc.stdout)  # --color always never puts escape codes into JSON
    assert [e["type"] for e in events[:-1]] == ["chunk"] * (len(events) - 1)
    done = events[-1]
    assert done["type"] == "done"
    assert done["text"] == "".join(e["text"] for e in events[:-1]) and done["text"].strip()
    usage = done["usage"]
    assert usage["completion_tokens"] >= 1 and usage["prompt_tokens"] >= 1
    assert {"total_time", "time_to_first_token", "tokens_per_second", "finish_reason"} <= set(usage)


@pytest.mark.model
def test_real_answer_follows_the_rules(run_gptcli):
    """The generating path: --color always styles a pipe wrapped to COLUMNS; --quiet drops --stats."""
    args = ("ask", "Write three sentences about the sea.", "-n", "20", "--seed", "5", "--temperature", "0", "--no-history")
    styled = run_gptcli("--color", "always", *args, env={"COLUMNS": "30"})
    assert styled.returncode == 0 and ESC in styled.stdout
    screen = pyte.Screen(200, 100)
    pyte.Stream(screen).feed(styled.stdout.replace("\n", "\r\n"))
    shown = [line.rstrip() for line in screen.display if line.strip()]
    assert shown and max(len(line) for line in shown) <= 30
    quiet = run_gptcli("-q", *args, "--stats")
    assert quiet.returncode == 0 and quiet.stdout.strip() and quiet.stderr == ""
    assert ESC not in quiet.stdout  # and a pipe gets plain text


def test_counts_read_as_english():
    from gptcli.textio import plural

    assert [plural(1, "chunk"), plural(3, "chunk"), plural(1, "reply", "replies"), plural(2, "reply", "replies")] == [
        "1 chunk", "3 chunks", "1 reply", "2 replies"]
    assert plural(1200, "token") == "1,200 tokens"
