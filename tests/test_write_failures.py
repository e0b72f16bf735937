"""Every command that writes a file, with a folder it cannot write and with a full disk: one error line, no traceback."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gptcli.models import embedded_model_path


def full_disk() -> None:
    """In the child: no file may grow past 0 bytes (EFBIG, as a full disk gives ENOSPC), and the
    signal a too-large write sends is ignored so the write fails instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))


def commands(session: str, out: Path) -> dict[str, list[str]]:
    return {
        "config set": ["config", "set", "temperature", "0.3"],
        "config edit": ["config", "edit"],
        "templates new": ["templates", "new", "standup", "--no-edit"],
        "templates edit": ["templates", "edit", "support"],
        "models add": ["models", "add", str(embedded_model_path()), "--alias", "mine"],
        "models default": ["models", "default", "smollm2-135m"],
        "history export": ["history", "export", session, "-o", str(out / "trip.md")],
        "history rename": ["history", "rename", session, "trip planning"],
        "history rm": ["history", "rm", session, "--yes"],
    }


def saved_session(cli, fake_engine) -> str:
    assert cli(["ask", "What is the capital of France?"]).exit_code == 0
    import json

    listed = cli(["history", "list", "--json"])
    return json.loads(listed.stdout)[0]["id"]


def run(gptcli_bin: str, args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDITOR": "true", "VISUAL": "true"}
    return subprocess.run([gptcli_bin, *args], capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL, **kwargs)


def assert_one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("name", list(commands("x", Path("."))))
def test_a_full_disk_is_one_error_line_and_nothing_half_written(name, cli, fake_engine, gptcli_bin, isolated_home, tmp_path):
    session = saved_session(cli, fake_engine)
    before = {p: p.read_bytes() for p in isolated_home.rglob("*") if p.is_file() and p.suffix in (".toml", ".json")}
    proc = run(gptcli_bin, commands(session, tmp_path)[name], preexec_fn=full_disk)
    line = assert_one_error_line(proc)
    assert "File too large" in line or "disk I/O error" in line or "full" in line, line
    after = {p: p.read_bytes() for p in isolated_home.rglob("*") if p.is_file() and p.suffix in (".toml", ".json")}
    assert after == before  # no half-written config, template, registry or export
    assert not (tmp_path / "trip.md").exists()
    assert not [p for p in isolated_home.rglob("*.tmp")]


@pytest.mark.parametrize("name", list(commands("x", Path("."))))
def test_a_folder_that_cannot_be_written_is_one_error_line(name, gptcli_bin, tmp_path, monkeypatch):
    """Root ignores permission bits, so the folder is made impossible: its parent is a regular file (ENOTDIR)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    monkeypatch.setenv("GPTCLI_HOME", str(blocker / "gptcli"))
    proc = run(gptcli_bin, commands("abcd", blocker)[name])
    line = assert_one_error_line(proc)
    assert str(blocker) in line and "Not a directory" in line, line
    assert blocker.read_text() == "a file where a folder should be\n"


def test_an_unexpected_exception_is_one_line_and_the_traceback_only_with_verbose(cli, fake_engine, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(sys.modules["gptcli.cli.run"], "load_template", broken)
    result = cli(["ask", "hi"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "error: unexpected error: RuntimeError: something nobody planned for (run again with --verbose for the details)"
    ]
    verbose = cli(["--verbose", "ask", "hi"])
    assert verbose.exit_code == 1
    assert "Traceback (most recent call last)" in verbose.stderr and "RuntimeError" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1].startswith("error: unexpected error: RuntimeError")


def test_an_os_error_with_json_is_an_error_event_too(cli, fake_engine, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/somewhere/history.db")

    monkeypatch.setattr(sys.modules["gptcli.cli.run"], "load_template", refuse)
    result = cli(["ask", "hi", "--json"])
    assert result.exit_code == 1
    import json

    event = json.loads(result.stdout.strip().splitlines()[-1])
    assert event["type"] == "error" and event["exit_code"] == 1
    assert event["message"].startswith("/somewhere/history.db: Permission denied")
