"""Every command's --help has a one-line summary and an example (walks the whole command tree)."""

from __future__ import annotations

import pytest
import typer

from gptcli.cli import app


def walk(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


COMMANDS = [(" ".join(path), command) for path, command in walk(typer.main.get_command(app)) if not command.hidden]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path or "gptcli" for path, _ in COMMANDS])
def test_help_has_a_summary_and_an_example(path, command):
    text = (command.help or "").strip()
    summary = text.splitlines()[0] if text else ""
    assert summary, f"`gptcli {path} --help` has no summary line"
    assert len(summary) <= 100, f"`gptcli {path}`: the summary should fit one line"
    assert "Example:" in text, f"`gptcli {path} --help` shows no 'Example:' line"
    example = text[text.index("Example:") + len("Example:"):].strip().splitlines()[0]
    assert "gptcli" in example, f"`gptcli {path}`: the example should be a command line"


def test_rendered_help_shows_the_example(run_gptcli):
    proc = run_gptcli("config", "set", "--help", env={"COLUMNS": "120"})
    assert proc.returncode == 0
    assert "Example: gptcli config set overflow drop" in proc.stdout


def test_flags_show_no_value_and_values_a_plain_type(run_gptcli):
    """`--continue` takes no value, so help shows none after it (Typer 0.29 printed `<bool>`)."""
    proc = run_gptcli("chat", "--help", env={"COLUMNS": "120", "NO_COLOR": "1"})
    assert proc.returncode == 0
    assert "<bool>" not in proc.stdout and "<str>" not in proc.stdout
    continue_row = next(line for line in proc.stdout.splitlines() if "--continue" in line)
    assert "TEXT" not in continue_row
    assert "KEY=VALUE" in proc.stdout and "INTEGER" in proc.stdout
