"""End to end: the installed gptcli executable with the real embedded model through llama.cpp."""

from __future__ import annotations

import pytest

from gptcli.models import embedded_model_path

pytestmark = pytest.mark.model


def test_ask_answers_on_a_pipe_with_plain_text(run_gptcli):
    proc = run_gptcli("ask", "What is the capital of France?", "-n", "24", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "no reply"
    assert "\x1b" not in proc.stdout
    assert proc.stdout.endswith("\n")
    assert proc.stderr == ""


def test_seed_reproduces_and_no_seed_varies(run_gptcli):
    args = ("ask", "Write one sentence about the sea.", "-n", "24", "--temperature", "1.0")
    first = run_gptcli(*args, "--seed", "42")
    second = run_gptcli(*args, "--seed", "42")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    unseeded = {run_gptcli(*args).stdout for _ in range(3)}
    assert len(unseeded) > 1, "replies without --seed should differ from run to run"


def test_piped_material_and_prompt(run_gptcli):
    proc = run_gptcli("ask", "Repeat the name in this note.", "-n", "24", "--temperature", "0", input="Note: the cat is called Tom.\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_draft_from_stdin(run_gptcli):
    proc = run_gptcli("draft", "-n", "40", "--seed", "2", input="- lunch friday\n- bring slides\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_chinese_output_is_valid_utf8(run_gptcli, gptcli_bin):
    import subprocess

    raw = subprocess.run(
        [gptcli_bin, "ask", "-n", "40", "--temperature", "0"],
        input="请用中文回答：中国的首都是哪里？".encode(),
        capture_output=True,
        timeout=120,
    )
    assert raw.returncode == 0, raw.stderr
    text = raw.stdout.decode("utf-8")  # strict: a broken character would raise
    assert "\ufffd" not in text
    assert any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_stats_line(run_gptcli):
    proc = run_gptcli("ask", "hi", "-n", "8", "--stats")
    assert proc.returncode == 0
    assert "tok/s" in proc.stderr and "first token" in proc.stderr


def context_of(stats: str) -> tuple[int, int]:
    used, size = stats.split("context ")[1].split()[0].split("/")
    return int(used), int(size)


def test_a_one_shot_gets_the_context_it_needs_and_flags_or_long_input_get_more(run_gptcli, tmp_path):
    short = run_gptcli("ask", "hi", "-n", "8", "--stats", "--no-history")
    assert short.returncode == 0, short.stderr
    used, size = context_of(short.stderr)
    assert used <= size < 4096  # loads faster than the default window
    assert size >= used + 8 - 1  # and leaves room for the whole reply
    asked = run_gptcli("ask", "hi", "-n", "8", "--stats", "--no-history", "--ctx", "4096")
    assert context_of(asked.stderr)[1] == 4096
    long_reply = run_gptcli("ask", "hi", "-n", "3000", "--stats", "--no-history", "--seed", "1")
    assert long_reply.returncode == 0, long_reply.stderr
    assert context_of(long_reply.stderr)[1] >= 3000
    document = tmp_path / "notes.txt"
    document.write_text("The meeting moved to Tuesday. " * 300)
    piped = run_gptcli("ask", "Summarize.", "--file", str(document), "-n", "8", "--stats", "--no-history")
    assert piped.returncode == 0, piped.stderr
    used, size = context_of(piped.stderr)
    assert used > 1500 and size >= used


def test_empty_stdin_is_an_error(run_gptcli):
    proc = run_gptcli("ask", input="")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "model file not found"),
        (b"", "empty or too small"),
        (b"hello, this is not a model at all" * 4, "GGUF magic"),
        ("truncated", "truncated"),
    ],
)
def test_bad_model_files_give_one_line_errors(run_gptcli, tmp_path, content, reason):
    path = tmp_path / "model.gguf"
    if content == "truncated":
        path.write_bytes(embedded_model_path().read_bytes()[: 5_000_000])
    elif content is not None:
        path.write_bytes(content)
    proc = run_gptcli("ask", "hi", "--model", str(path))
    assert proc.returncode == 1, proc.stderr
    assert reason in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_gptcli_model_env_is_used(run_gptcli, tmp_path):
    bad = tmp_path / "env.gguf"
    bad.write_bytes(b"GGUF")
    proc = run_gptcli("ask", "hi", env={"GPTCLI_MODEL": str(bad)})
    assert proc.returncode == 1 and str(bad) in proc.stderr


def test_python_dash_m_and_version(gptcli_bin):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "gptcli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("gptcli ")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (Linux /proc)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_a_long_prompt_evaluation_at_once(gptcli_bin, tmp_path, signame, code):
    """Ctrl-C (or SIGTERM) lands inside llama_decode: it must not wait for the whole batch."""
    import os
    import signal
    import subprocess
    import time

    words = " ".join(f"word{i % 97}" for i in range(1200))  # ~3,500 tokens: one batch of ~10 s here
    env = dict(os.environ, GPTCLI_BATCH_SIZE="4096")
    proc = subprocess.Popen(
        [gptcli_bin, "ask", "Count the words.", "--ctx", "4096", "-n", "8", "--no-history"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    proc.stdin.write(words.encode())
    proc.stdin.close()
    # loaded (about 0.5 s of CPU here) and into evaluating the prompt, on a slow or a fast machine
    deadline = time.monotonic() + 120
    while cpu_seconds(proc.pid) < 1.5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()
    sent = time.monotonic()
    proc.send_signal(getattr(signal, signame))
    proc.wait(timeout=60)
    stopped_after = time.monotonic() - sent
    err = proc.stderr.read().decode()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert stopped_after < 2.5, f"took {stopped_after:.1f} s to stop"


def test_llama_cpp_log_is_silent_by_default_and_shown_with_verbose(run_gptcli):
    quiet = run_gptcli("ask", "hi", "-n", "2", "--no-history")
    assert quiet.returncode == 0 and quiet.stderr == ""
    loud = run_gptcli("--verbose", "ask", "hi", "-n", "2", "--no-history")
    assert loud.returncode == 0
    assert "llama_model_loader" in loud.stderr and "create_tensor" in loud.stderr  # its debug lines too
