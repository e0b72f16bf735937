"""End to end: `gptcli serve` (llama-cpp-python's own server) with the embedded model, driven by gptcli commands."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import gptcli_executable

pytestmark = pytest.mark.model

SERVE_KEY = "sk-serve-k3y-never-shown-71c2"
STORY = ("ask", "Write a long story about a dragon.", "--temperature", "1.0", "--seed", "7")


@dataclass
class Served:
    proc: subprocess.Popen
    base_url: str
    banner: str

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTCLI_")}
    env.update(GPTCLI_HOME=str(home), HF_HUB_OFFLINE="1", **extra)
    return env


def start_server(home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Served:
    """`gptcli serve --port 0 ...`; returns once it printed its URL and /v1/models answers."""
    proc = subprocess.Popen(
        # one thread: llama.cpp's threads stall each other on a busy machine (tests run beside others)
        [gptcli_executable(), "serve", "--port", "0", "--ctx", "1024", "--threads", "1", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=env or server_env(home),
    )
    assert proc.stdout is not None
    banner = b""
    deadline = time.monotonic() + timeout
    while b"\nthen:" not in banner:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"gptcli serve did not start: {banner!r} {proc.stderr.read()!r}")  # type: ignore[union-attr]
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            banner += os.read(proc.stdout.fileno(), 65536)
    text = banner.decode()
    match = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", text)
    assert match, text
    served = Served(proc, match.group(1), text)
    headers = {"Authorization": f"Bearer {env['SERVE_KEY']}"} if env and "SERVE_KEY" in env else {}
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(served.base_url + "/models", headers=headers), timeout=5) as r:
                if r.status == 200:
                    return served
        except OSError:
            if time.monotonic() > deadline:
                served.stop()
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = start_server(tmp_path_factory.mktemp("serve-home"))
    yield served
    served.stop()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("serve-key-home")
    served = start_server(home, "--api-key-env", "SERVE_KEY", env=server_env(home, SERVE_KEY=SERVE_KEY))
    yield served
    served.stop()


def remote(server: Served, *args: str) -> tuple[str, ...]:
    return (*args, "--engine", "remote", "--base-url", server.base_url)


def profile_from_banner(banner: str) -> str:
    start = banner.index("[engines.warm]")
    return banner[start: banner.index("\n\n", start)]


def history_rows(home: Path) -> list[tuple[str, str, bool]]:
    from gptcli.store import ConversationStore

    store = ConversationStore.open()
    try:
        session = store.latest_session()
        return [] if session is None else [(m.role, m.content, m.interrupted) for m in store.messages(session.id)]
    finally:
        store.close()


# ---------------------------------------------------------------- commands through the server


def test_serve_prints_a_profile_that_points_gptcli_at_it(server, run_gptcli, isolated_home):
    snippet = profile_from_banner(server.banner)
    profile = tomllib.loads(snippet)["engines"]["warm"]
    assert profile == {"base_url": server.base_url, "model": "smollm2-135m", "context_length": 1024}
    (isolated_home / "config.toml").write_text(snippet + "\n", encoding="utf-8")
    proc = run_gptcli("ask", "What is the capital of France?", "--engine", "warm", "-n", "12", "--stats")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    assert "/1024" in proc.stderr  # the stats line knows the server's context window
    assert history_rows(isolated_home)[-1][0] == "assistant"


def test_ask_with_flags_streams_and_the_seed_reproduces(server, run_gptcli):
    args = remote(server, *STORY, "-n", "16")
    first, second = run_gptcli(*args), run_gptcli(*args)
    assert first.returncode == second.returncode == 0, first.stderr
    assert first.stdout.strip() and first.stdout == second.stdout
    assert "\x1b" not in first.stdout and first.stderr == ""


def test_context_size_comes_from_the_server(server, run_gptcli):
    proc = run_gptcli(*remote(server, "ask", "hi", "-n", "4", "--stats"))
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"context \d+/1024", proc.stderr), proc.stderr  # from /props, no profile needed


def test_chat_reads_one_turn_per_line(server, run_gptcli, isolated_home):
    proc = run_gptcli(*remote(server, "chat", "-n", "12", "--temperature", "0"), input="Hello!\nWhat is 2+2?\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    rows = history_rows(isolated_home)
    assert [r[0] for r in rows].count("assistant") == 2
    assert [r[1] for r in rows if r[0] == "user"] == ["Hello!", "What is 2+2?"]


def test_translate_in_parallel_through_the_server(server, run_gptcli, tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Garden notes\n\nThe roses need water every morning.\n\nThe apple tree is old but strong.\n", encoding="utf-8")
    out = tmp_path / "notes.fr.md"
    proc = run_gptcli(*remote(server, "translate", str(doc), "--to", "fr", "-o", str(out), "--parallel", "2",
                              "--chunk-tokens", "10", "--max-tokens", "24"))
    assert proc.returncode == 0, proc.stderr
    translated = out.read_text(encoding="utf-8")
    assert translated.startswith("#") and translated.endswith("\n")
    assert re.search(r"(\d+) chunks", proc.stderr) and int(re.search(r"(\d+) chunks", proc.stderr).group(1)) > 1


def test_an_input_too_long_for_the_server_is_a_clear_error(server, run_gptcli):
    proc = run_gptcli(*remote(server, "ask", "Summarize:", "-n", "8"), input="word " * 1500)
    assert proc.returncode == 1
    assert "does not fit the server's context window" in proc.stderr and "1024" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_model_name_lists_what_is_served(server, run_gptcli):
    proc = run_gptcli(*remote(server, "ask", "hi", "--model", "llama-70b"))
    assert proc.returncode == 1
    assert "model 'llama-70b' is not served" in proc.stderr and "smollm2-135m" in proc.stderr


def test_wrong_port_is_connection_refused(run_gptcli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_gptcli("ask", "hi", "--engine", "remote", "--base-url", f"http://127.0.0.1:{port}/v1")
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}/v1: connection refused" in proc.stderr
    assert proc.stderr.count("\n") == 1


# ---------------------------------------------------------------- keys


def test_a_server_that_requires_a_key(keyed_server, run_gptcli, isolated_home):
    missing = run_gptcli(*remote(keyed_server, "ask", "hi", "-n", "4"))
    assert missing.returncode == 1
    assert "requires an API key (401 Unauthorized)" in missing.stderr and "GPTCLI_API_KEY" in missing.stderr

    wrong = run_gptcli(*remote(keyed_server, "ask", "hi", "-n", "4"), env={"GPTCLI_API_KEY": "not-it"})
    assert wrong.returncode == 1 and "rejected the API key from $GPTCLI_API_KEY" in wrong.stderr

    (isolated_home / "config.toml").write_text(profile_from_banner(keyed_server.banner) + "\n", encoding="utf-8")
    assert 'api_key_env = "SERVE_KEY"' in keyed_server.banner and SERVE_KEY not in keyed_server.banner
    ok = run_gptcli("ask", "hi", "--engine", "warm", "-n", "6", "--json", env={"SERVE_KEY": SERVE_KEY})
    assert ok.returncode == 0, ok.stderr
    assert '"type": "done"' in ok.stdout
    for proc in (missing, wrong, ok):
        assert SERVE_KEY not in proc.stdout + proc.stderr
    for path in isolated_home.rglob("*"):
        if path.is_file():
            assert SERVE_KEY.encode() not in path.read_bytes(), path


# ---------------------------------------------------------------- the server dies


def test_server_killed_mid_reply(tmp_path_factory, gptcli_bin, isolated_home):
    doomed = start_server(tmp_path_factory.mktemp("doomed-home"))
    try:
        ask = subprocess.Popen(
            [gptcli_bin, *remote(doomed, *STORY, "-n", "400")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=dict(os.environ), bufsize=0,
        )
        assert ask.stdout is not None
        shown = ask.stdout.read(12)  # the reply is streaming
        doomed.proc.kill()  # a crash, not a shutdown
        rest, err = ask.communicate(timeout=60)
    finally:
        doomed.stop()
    printed = (shown + rest).decode()
    assert ask.returncode == 1
    assert "went away in the middle of the reply" in err.decode()
    assert printed.startswith(shown.decode()) and printed.endswith("\n")
    role, content, interrupted = history_rows(isolated_home)[-1]
    assert role == "assistant" and interrupted and content.strip() == printed.strip()


# ---------------------------------------------------------------- serve itself


def test_serve_on_a_busy_port_fails_before_loading(run_gptcli):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        proc = run_gptcli("serve", "--port", str(port), timeout=60)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in proc.stderr
    assert "loading" not in proc.stderr and time.monotonic() - started < 20


def test_serve_key_variable_must_be_set(run_gptcli):
    proc = run_gptcli("serve", "--port", "0", "--api-key-env", "GPTCLI_TEST_UNSET_KEY")
    assert proc.returncode == 2
    assert "GPTCLI_TEST_UNSET_KEY" in proc.stderr and "not set" in proc.stderr


def test_serve_refuses_a_gpu_layers_value_that_is_not_a_number(run_gptcli):
    proc = run_gptcli("serve", "--port", "0", "--gpu-layers", "many")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --gpu-layers takes a number or 'all'"
