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


def rendered_help(cli, capsys, monkeypatch, path: str, columns: int = 100) -> str:
    """The help page as a terminal of ``columns`` shows it (Rich prints it to sys.stdout)."""
    monkeypatch.setenv("COLUMNS", str(columns))
    capsys.readouterr()
    result = cli([*path.split(), "--help"])
    assert result.exit_code == 0, result.stderr
    return capsys.readouterr().out + result.stdout


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[path or "gptcli" for path, _ in COMMANDS])
def test_help_uses_one_placeholder_style(cli, capsys, monkeypatch, path, command):
    import re

    text = rendered_help(cli, capsys, monkeypatch, path)
    assert not re.search(r"<(str|int|float|int range|float range|path)>", text), text  # TEXT, INTEGER, FLOAT
    assert not re.search(r"\{[a-z_]+\}", text.split("\n\n")[1] if "\n\n" in text else text), text  # not {repo}
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert not re.search(r"\[[a-z_]+(\.\.\.)?\]", usage), usage  # [PROMPT], not [prompt]
    assert ",--" not in text  # --temperature, --temp


@pytest.mark.parametrize("path", ["translate", "models pull", "ask"])
def test_help_paragraphs_are_not_broken_mid_sentence(cli, capsys, monkeypatch, path):
    """A wide terminal shows each paragraph of the description on one line."""
    text = rendered_help(cli, capsys, monkeypatch, path, columns=400)
    command = dict(COMMANDS)[path]
    from gptcli.cli.app import unwrap_paragraphs

    for paragraph in unwrap_paragraphs(command.help).split("\n\n"):
        first_line = paragraph.splitlines()[0]
        assert first_line.strip() in " ".join(text.split()), first_line
        assert any(first_line.strip() == line.strip() for line in text.splitlines()), f"broken: {first_line!r}"


def test_a_range_does_not_squeeze_the_descriptions(cli, capsys, monkeypatch):
    text = rendered_help(cli, capsys, monkeypatch, "translate")
    line = next(line for line in text.splitlines() if "--parallel" in line)
    assert "INTEGER" in line and "[1<=x<=64]" not in line  # the range goes on the next line
    assert "Chunks translated at once" in line


def test_translate_shows_only_the_output_flags_that_mean_something_for_it(cli, capsys, monkeypatch):
    text = rendered_help(cli, capsys, monkeypatch, "translate", columns=160)
    for flag in ("--no-history", "--plain", "--no-loop-guard", "Output and history"):
        assert flag not in text, flag
    assert "a start event per file" in text and "summary line" in text
    ask = rendered_help(cli, capsys, monkeypatch, "ask", columns=160)
    assert "--no-history" in ask and "--no-loop-guard" in ask and "Output and history" in ask
