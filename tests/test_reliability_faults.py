"""Signals and refusals from the system, in real processes: chat, translate and models pull.

SIGINT (Ctrl-C), SIGTERM (a service manager, `timeout`, `kill`) and SIGKILL (the OOM killer, a crash)
arrive mid-work. Promised: at most the reply or chunk in flight is lost, the history passes
``PRAGMA integrity_check``, no temporary file survives the next run, and a translation or a
download carries on where it stopped. Plus: a full disk under a translation, and a data folder
that cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gptcli.store import ConversationStore, default_store_path
from tests.conftest import ROOT, integrity

SIGNALS = {
    "SIGINT": (signal.SIGINT, 130),
    "SIGTERM": (signal.SIGTERM, 143),
    "SIGKILL": (signal.SIGKILL, -signal.SIGKILL),
}

# gptcli's real entry point (main(): signal handlers, exit codes) with a scripted engine
FAKE_MAIN = """
import sys
from gptcli.engines import choose
ENGINE
choose.open_engine = lambda settings: engine
PRELUDE
sys.argv = ["gptcli", *sys.argv[1:]]
from gptcli.cli import main
main()
"""

SLOW_CHAT_ENGINE = """
from tests.fakes import FakeEngine
engine = FakeEngine(replies=["Short first answer.", "".join(f"word{i} " for i in range(600))], delay=0.01)
"""

SLOW_TRANSLATOR = """
import gptcli.translate.checks
from tests.test_translate import ScriptedTranslator
engine = ScriptedTranslator(transform=str.upper, delay=0.15, context_size=512)
gptcli.translate.checks.detect_language = lambda text: None  # upper case is no French: no language check
"""


def start(engine: str, *args: str, prelude: str = "", env: dict[str, str] | None = None, stdin: bytes | None = None) -> subprocess.Popen:
    code = textwrap.dedent(FAKE_MAIN).replace("ENGINE", textwrap.dedent(engine)).replace("PRELUDE", textwrap.dedent(prelude))
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # communicate() must not touch it again
    return proc


def read_until(proc: subprocess.Popen, needle: bytes, timeout: float = 60) -> bytes:
    """Read stdout until ``needle`` appears (the work is under way)."""
    assert proc.stdout is not None
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        assert time.monotonic() < deadline, f"never saw {needle!r}: {got[-200:]!r}"
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"output ended before {needle!r}: {got[-300:]!r} {proc.stderr.read() if proc.stderr else b''!r}"
        got += chunk
    return got


def finish(proc: subprocess.Popen, sig: int) -> tuple[int, bytes, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err.decode("utf-8", "replace")


def leftovers(folder: Path) -> list[str]:
    """Temporary debris: our own temp files, partial downloads, SQLite journals left open."""
    found = []
    for path in folder.rglob("*"):
        name = path.name
        if name.endswith((".tmp", ".incomplete", "-wal", "-shm", "-journal")):
            found.append(str(path.relative_to(folder)))
    return sorted(found)


# ---------------------------------------------------------------- chat (piped stdin)


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_during_a_chat_reply_loses_at_most_that_reply(isolated_home, name):
    sig, code = SIGNALS[name]
    with ConversationStore.open() as store:
        old = store.create_session(model="m", title="an older chat")
        store.add_turn(old.id, "old question", "old answer")
    proc = start(SLOW_CHAT_ENGINE, "chat", stdin=b"first question\nsecond question\nthird question\n")
    shown = read_until(proc, b"word0 word1 word2")
    returncode, rest, err = finish(proc, sig)
    assert returncode == code, err
    assert "Traceback" not in err
    assert integrity(default_store_path()) == "ok"
    with ConversationStore.open() as store:
        sessions = store.list_sessions()
        assert [m.content for m in store.messages(old.id)] == ["old question", "old answer"]
        (chat,) = [s for s in sessions if s.id != old.id]
        messages = store.messages(chat.id)
    contents = [(m.role, m.content) for m in messages]
    assert contents[:2] == [("user", "first question"), ("assistant", "Short first answer.")]
    if sig == signal.SIGKILL:
        assert len(messages) == 2  # the reply in flight is lost, and only it
    else:  # like Ctrl-C: the partial reply is kept, marked, and the chat stops there
        assert len(messages) == 4
        assert contents[2] == ("user", "second question")
        partial = messages[3]
        assert partial.interrupted and partial.content.startswith("word0 word1 word2")
        assert len(partial.content) < len("".join(f"word{i} " for i in range(600)))
        assert (shown + rest).decode().count("word") >= partial.content.count("word")
    # the next run opens the same history, adds to it, and leaves no journal or temporary behind
    again = subprocess.run([sys.executable, "-c", textwrap.dedent(FAKE_MAIN).replace("ENGINE", SLOW_CHAT_ENGINE.replace("0.01", "0")).replace("PRELUDE", ""), "ask", "after"],
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert leftovers(isolated_home) == []
    assert integrity(default_store_path()) == "ok"


@pytest.mark.model
def test_sigterm_during_a_real_chat_reply_keeps_the_partial_reply(gptcli_bin, isolated_home):
    proc = subprocess.Popen(
        [gptcli_bin, "chat", "-n", "400", "--ctx", "512", "--seed", "4", "--temperature", "0.8"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ),
    )
    assert proc.stdin is not None
    proc.stdin.write(b"Tell me a very long story about a lighthouse keeper.\n")
    proc.stdin.close()
    proc.stdin = None
    shown = b""
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while len(shown) < 40:
        assert time.monotonic() < deadline
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, proc.stderr.read() if proc.stderr else b""
        shown += chunk
    returncode, rest, err = finish(proc, signal.SIGTERM)
    assert returncode == 143, err
    assert "Traceback" not in err
    assert integrity(default_store_path()) == "ok"
    with ConversationStore.open() as store:
        (info,) = store.list_sessions()
        user, reply = store.messages(info.id)
    assert user.content.startswith("Tell me a very long story")
    assert reply.interrupted and len(reply.content) >= 40
    assert (shown + rest).decode("utf-8", "replace").strip().startswith(reply.content.strip()[:40])


# ---------------------------------------------------------------- translate


def make_document(folder: Path, paragraphs: int = 12) -> Path:
    source = folder / "guide.md"
    text = "\n\n".join(f"Paragraph {n} tells the reader about step {n} of the guide." for n in range(paragraphs))
    source.write_text("# The guide\n\n" + text + "\n")
    return source


@pytest.mark.parametrize("name", list(SIGNALS))
def test_a_signal_during_translate_keeps_finished_chunks_and_the_next_run_resumes(tmp_path, isolated_home, name):
    sig, code = SIGNALS[name]
    source = make_document(tmp_path)
    out = tmp_path / "guide.fr.md"
    out.write_text("the previous translation\n")
    args = ["translate", str(source), "--to", "fr", "-o", str(out), "--force", "--json", "--chunk-tokens", "16"]
    proc = start(SLOW_TRANSLATOR, *args)
    read_until(proc, b'"type": "chunk"')
    read_until(proc, b'"type": "chunk"')  # at least two chunks finished
    returncode, _, err = finish(proc, sig)
    assert returncode == code, err
    assert "Traceback" not in err
    assert out.read_text() == "the previous translation\n"  # never half a file
    if sig != signal.SIGKILL:
        assert "run the same command again" in " ".join(err.split())
        assert leftovers(tmp_path) == []

    again = start(SLOW_TRANSLATOR.replace("0.15", "0"), *args)
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr.decode()
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    assert events[0]["cached"] >= 2  # finished chunks were kept
    fresh = [e for e in events if e["type"] == "chunk" and not e["cached"]]
    assert len(fresh) == events[0]["chunks"] - events[0]["cached"]
    assert out.read_text() == source.read_text().upper()
    assert leftovers(tmp_path) == [] and leftovers(isolated_home) == []


def test_a_full_disk_under_a_translation_is_one_error_and_no_half_written_file(tmp_path, isolated_home):
    source = make_document(tmp_path, paragraphs=400)
    out = tmp_path / "guide.fr.md"
    out.write_text("the previous translation\n")
    limit = 8_000  # bytes any one file may grow to: the output needs far more
    prelude = f"""
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    """
    proc = start(SLOW_TRANSLATOR.replace("0.15", "0"), "translate", str(source), "--to", "fr", "-o", str(out), "--force",
                 "--chunk-tokens", "64", prelude=prelude)
    stdout, stderr = proc.communicate(timeout=120)
    err = stderr.decode()
    assert proc.returncode == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), err
    assert "File too large" in lines[0]
    assert out.read_text() == "the previous translation\n"
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- models pull


@pytest.mark.parametrize("name", ["SIGTERM", "SIGKILL"])
def test_a_signal_during_models_pull_keeps_the_part_and_the_next_pull_resumes(hub, gptcli_bin, isolated_home, name):
    """(SIGINT: tests/test_models_hub.py::test_ctrl_c_during_a_download_keeps_the_part_for_the_next_pull)"""
    from gptcli.models import Registry, embedded_model_path

    sig, code = SIGNALS[name]
    path = embedded_model_path()
    data = path.read_bytes()
    repo = "acme/tiny-GGUF"
    hub.add_repo(repo, {"big-Q4_1.gguf": path})
    hub.throttle = 0.05
    cache = Path(os.environ["HF_HOME"]) / "hub" / "models--acme--tiny-GGUF"
    sha = hashlib.sha256(data).hexdigest()
    partial = cache / "blobs" / f"{sha}.incomplete"
    proc = subprocess.Popen([gptcli_bin, "models", "pull", repo], env={**os.environ, **hub.env()},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not partial.exists() or partial.stat().st_size < 20_000_000:
        assert time.monotonic() < deadline and proc.poll() is None, "the download did not start"
        time.sleep(0.05)
    returncode, _, err = finish(proc, sig)
    assert returncode == code, err
    assert "Traceback" not in err
    if sig == signal.SIGTERM:
        assert "interrupted at" in err and "pull again to resume" in err
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert Registry.load().models == {}  # nothing half-registered

    hub.throttle = 0.0
    before = len(hub.requests)
    again = subprocess.run([gptcli_bin, "models", "pull", repo], env={**os.environ, **hub.env()}, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    ranges = [r.headers.get("range") for r in hub.requests[before:] if r.server == "cdn" and r.method == "GET"]
    assert len(ranges) == 1 and ranges[0].startswith("bytes=") and int(ranges[0][6:-1]) >= kept - (1 << 20)
    assert (cache / "blobs" / sha).read_bytes() == data
    assert "big-q4_1" in Registry.load().models
    assert leftovers(cache) == [] and leftovers(isolated_home) == []


# ---------------------------------------------------------------- a data folder that cannot be written


def test_a_data_folder_that_cannot_be_written_still_answers_with_history_off(tmp_path, monkeypatch, cli, fake_engine):
    """Root ignores permission bits, so the folder is made impossible instead: its parent is a regular file.

    (ENOTDIR for everyone, root included; a chmod 0500 folder behaves the same for other users.)
    """
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be\n")
    monkeypatch.setenv("GPTCLI_HOME", str(blocker / "gptcli"))
    asked = cli(["ask", "hello"])
    assert asked.exit_code == 0, asked.stderr
    assert asked.stdout == "Hello from the fake engine.\n"
    notice = asked.stderr.strip().splitlines()
    assert len(notice) == 1 and notice[0].startswith("history not saved: cannot create the history folder")
    chatted = cli(["chat"], stdin="hello\nagain\n")
    assert chatted.exit_code == 0, chatted.stderr
    assert chatted.stdout.count("Hello from the fake engine.") == 2
    assert "history not saved" in chatted.stderr and "Traceback" not in chatted.stderr
    listed = cli(["history", "list"])
    assert listed.exit_code == 1 and listed.stderr.startswith("error: cannot create the history folder")
    assert not (blocker / "gptcli").exists() and blocker.read_text() == "a file where a folder should be\n"


def test_translate_with_a_data_folder_that_cannot_be_written_still_translates(tmp_path, monkeypatch, cli):
    from tests.test_translate import ScriptedTranslator

    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: ScriptedTranslator(transform=str.upper))
    monkeypatch.setattr("gptcli.translate.checks.detect_language", lambda text: None)  # upper case is no French
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("GPTCLI_HOME", str(blocker / "gptcli"))
    source = make_document(tmp_path, paragraphs=3)
    result = cli(["translate", str(source), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == source.read_text().upper()
    assert "finished chunks are not kept" in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- the interactive chat (a real pseudo-terminal)


def spawn_interactive(engine: str, *args: str):
    import pexpect

    code = textwrap.dedent(FAKE_MAIN).replace("ENGINE", textwrap.dedent(engine)).replace("PRELUDE", "")
    return pexpect.spawn(sys.executable, ["-c", code, *args], cwd=str(ROOT), timeout=60, dimensions=(24, 100),
                         env={**os.environ, "PYTHONPATH": str(ROOT), "TERM": "xterm"})


def test_sigterm_at_the_interactive_prompt_ends_the_chat(isolated_home):
    """Ctrl-C at the prompt only clears the line; SIGTERM must still end the process."""
    import pexpect

    child = spawn_interactive(SLOW_CHAT_ENGINE, "chat")
    child.expect("\u203a".encode())
    child.send("first question\r")
    child.expect("Short first answer.")
    child.expect("\u203a".encode())
    child.kill(signal.SIGTERM)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 143, child.before
    with ConversationStore.open() as store:
        (info,) = store.list_sessions()
        assert [m.content for m in store.messages(info.id)] == ["first question", "Short first answer."]


def test_sigterm_during_an_interactive_reply_keeps_it_and_ends_the_chat(isolated_home):
    import pexpect

    child = spawn_interactive(SLOW_CHAT_ENGINE, "chat")
    child.expect("\u203a".encode())
    child.send("first question\r")
    child.expect("Short first answer.")
    child.expect("\u203a".encode())
    child.send("second question\r")
    child.expect("word0 word1 word2")
    child.kill(signal.SIGTERM)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 143, child.before
    assert "Traceback" not in child.before.decode("utf-8", "replace")
    assert integrity(default_store_path()) == "ok"
    with ConversationStore.open() as store:
        (info,) = store.list_sessions()
        messages = store.messages(info.id)
    assert [m.content for m in messages[:3]] == ["first question", "Short first answer.", "second question"]
    assert messages[3].interrupted and messages[3].content.startswith("word0 word1")


# ---------------------------------------------------------------- one-shot commands and temporary files


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_signal_during_ask_saves_the_partial_reply(isolated_home, name):
    """(SIGKILL and Ctrl-C with the real model: tests/test_store_faults.py)"""
    sig, code = SIGNALS[name]
    proc = start(SLOW_CHAT_ENGINE.replace('"Short first answer.", ', ""), "ask", "a long question")
    read_until(proc, b"word0 word1 word2")
    returncode, _, err = finish(proc, sig)
    assert returncode == code, err
    assert "Traceback" not in err
    assert integrity(default_store_path()) == "ok"
    with ConversationStore.open() as store:
        (info,) = store.list_sessions()
        user, reply = store.messages(info.id)
    assert user.content == "a long question"
    assert reply.interrupted and reply.content.startswith("word0 word1 word2")


HOLDER = """
import sys, time
from gptcli.textio import AtomicTextFile
out = AtomicTextFile(sys.argv[1])
out.write("half of a document")
out.file.flush()
print(out.tmp, flush=True)
time.sleep(60)
"""


def test_a_live_writers_temporary_file_is_kept_and_a_dead_ones_is_swept(tmp_path):
    """The next write of a file removes temporaries a killed gptcli left, never one still being written."""
    from gptcli.textio import atomic_write, sweep_stale_temporaries

    target = tmp_path / "out.md"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout is not None
    temporary = Path(holder.stdout.readline().decode().strip())
    assert temporary.exists()
    try:
        assert sweep_stale_temporaries(tmp_path, target.name) == 0
        atomic_write(target, "another writer's text\n")
        assert temporary.exists() and temporary.read_text() == "half of a document"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    atomic_write(target, "the next run\n")
    assert not temporary.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.md"]
    assert target.read_text() == "the next run\n"
