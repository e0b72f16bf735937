"""Shared fixtures: an isolated user folder for every test, the installed executable, a fake engine."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gptcli.render import Env
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parent.parent


# The multilingual encoder writes an uncompressed copy of its weights (80 MB) into the cache folder
# the first time it loads; the first test home that made one lends it to the later ones by a hard
# link, so a run writes it once rather than once per test that ranks a knowledge base.
ENCODER_COPY = "cache/kb-index/use-multilingual-v3-*/weights.npz"
_encoder_copy: list[tuple[Path, Path]] = []  # (the file, its path under a home)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own data and config folder; no user setting leaks in."""
    home = tmp_path_factory.mktemp("gptcli-home")
    for name in list(os.environ):
        if name.startswith("GPTCLI_") or name in {"NO_COLOR", "FORCE_COLOR", "HF_TOKEN"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GPTCLI_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("COLUMNS", "100")
    for source, relative in _encoder_copy:
        lent = home / relative
        with contextlib.suppress(OSError):  # no hard links here: the encoder writes its own copy
            for folder in reversed(lent.parents[: len(relative.parents) - 1]):
                folder.mkdir(mode=0o700, exist_ok=True)  # as gptcli makes its cache folders
            os.link(source, lent)
    yield home
    if not _encoder_copy:
        _encoder_copy.extend((found, found.relative_to(home)) for found in sorted(home.glob(ENCODER_COPY))[:1])


def gptcli_executable() -> str:
    """The installed console script (the venv's bin folder first)."""
    candidate = Path(sys.executable).parent / "gptcli"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("gptcli")
    assert found, "gptcli is not installed: run the README's install command"
    return found


@pytest.fixture
def gptcli_bin() -> str:
    return gptcli_executable()


@pytest.fixture
def run_gptcli(gptcli_bin: str):
    """Run the installed ``gptcli`` as a user would; returns the CompletedProcess (bytes decoded)."""

    def run(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None, timeout: float = 240):
        full_env = dict(os.environ)
        full_env.update(env or {})
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [gptcli_bin, *args],
            input=data if data is not None else b"",
            capture_output=True,
            env=full_env,
            timeout=timeout,
        )
        proc.stdout = proc.stdout.decode("utf-8")  # type: ignore[assignment]
        proc.stderr = proc.stderr.decode("utf-8", errors="replace")  # type: ignore[assignment]
        return proc

    return run


class TextStream(io.StringIO):
    def __init__(self, text: str = "", tty: bool = False) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Replace the engine every command opens with a scripted fake."""
    engine = FakeEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    return engine


@pytest.fixture
def cli():
    """Run gptcli in-process with its own streams: ``cli(["ask", "hi"], stdin="...")``."""
    from gptcli.cli import run

    def invoke(argv: list[str], stdin: str | None = None, tty: bool = False) -> CliResult:
        env = Env(
            stdin=TextStream(stdin or "", tty=stdin is None),
            stdout=TextStream(tty=tty),
            stderr=TextStream(),
        )
        code = run(argv, env=env)
        return CliResult(code, env.stdout.getvalue(), env.stderr.getvalue())  # type: ignore[attr-defined]

    return invoke


def integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file, read with sqlite3 alone (not through gptcli's store)."""
    con = sqlite3.connect(path)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """A fake Hugging Face Hub on 127.0.0.1; this process and `run_gptcli` children talk to it, online."""
    from tests.hubserver import FakeHub

    with FakeHub() as server:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        yield server


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 370 KB random-weight GGUF llama.cpp loads in milliseconds (tests/tinymodel.py)."""
    from tests.tinymodel import write_tiny_gguf

    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny-random.gguf")
