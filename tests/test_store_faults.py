"""History faults with real processes: concurrent writers, kill -9, Ctrl-C, a disk that refuses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gptcli.store import ConversationStore, default_store_path, make_title
from tests.conftest import ROOT, integrity

WRITERS = 8


def python(code: str, *args: str, env: dict[str, str] | None = None, **popen: object) -> subprocess.Popen:
    """Start a real Python process running ``code`` from the repository root."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,  # type: ignore[arg-type]
    )


# gptcli's own command line, in a real process, with the fake engine in place of the model
FAKE_GPTCLI = """
import sys
from gptcli.engines import choose
from tests.fakes import FakeEngine
choose.open_engine = lambda settings: FakeEngine(replies=["Saved reply number " + sys.argv[1]])
from gptcli.cli import run
PRELUDE
codes = [run(argv.split("|")) for argv in sys.argv[2:]]
sys.exit(max(codes))
"""


def fake_gptcli(tag: str, *argvs: str, prelude: str = "", env: dict[str, str] | None = None) -> subprocess.Popen:
    return python(FAKE_GPTCLI.replace("PRELUDE", prelude), tag, *argvs, env=env)


# ---------------------------------------------------------------- concurrent writers


WRITER = """
import os, sys, time
from pathlib import Path
from gptcli.store import ConversationStore
path, number, turns, shared, gate = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])
while not gate.exists():
    time.sleep(0.001)
with ConversationStore.open(path) as store:  # all open (create, migrate) at once
    own = store.create_session(model=f"writer-{number}")
    for turn in range(turns):
        store.add_turn(own.id, f"writer {number} question {turn}", f"writer {number} answer {turn}")
        if shared != "-" and turn % 4 == 0:
            store.add_message(shared, "user", f"writer {number} was here at {turn}")
print(own.id)
"""


def run_writers(path: Path, gate: Path, turns: int, shared: str) -> list[str]:
    """Start the writers, open the gate once they all wait at it; their session ids."""
    gate.unlink(missing_ok=True)
    procs = [python(WRITER, str(path), str(n), str(turns), shared, str(gate)) for n in range(WRITERS)]
    time.sleep(1.0)  # every interpreter started and waiting
    gate.touch()
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()
        assert err == b"", err.decode()  # no "database is locked", no warning
    return [out.decode().strip() for out, _ in results]


def assert_every_turn(store: ConversationStore, session_ids: list[str], turns: int) -> None:
    for number, sid in enumerate(session_ids):
        expected = []
        for turn in range(turns):
            expected += [f"writer {number} question {turn}", f"writer {number} answer {turn}"]
        assert [m.content for m in store.messages(sid)] == expected


def test_eight_writer_processes_lose_nothing_and_never_see_a_lock_error(tmp_path: Path):
    path = tmp_path / "home" / "history.db"
    gate = tmp_path / "go"
    turns = 40
    # 1. no file yet: the eight race to create and migrate it, then write their own sessions
    first = run_writers(path, gate, turns, "-")
    assert integrity(path) == "ok"
    with ConversationStore.open(path) as store:
        assert store.count_sessions() == WRITERS
        assert_every_turn(store, first, turns)
        shared = store.create_session(model="shared", title="shared").id
    # 2. the file exists: the eight also take turns appending to one shared session
    second = run_writers(path, gate, turns, shared)
    assert integrity(path) == "ok"
    with ConversationStore.open(path) as store:
        assert store.count_sessions() == 2 * WRITERS + 1
        assert_every_turn(store, first, turns)
        assert_every_turn(store, second, turns)
        notes = [m.content for m in store.messages(shared)]
        assert sorted(notes) == sorted(f"writer {n} was here at {t}" for n in range(WRITERS) for t in range(0, turns, 4))


def test_eight_gptcli_processes_save_every_exchange(isolated_home: Path):
    asks = 6
    procs = [
        fake_gptcli(str(n), *[f"ask|process {n} question {k}" for k in range(asks)])
        for n in range(WRITERS)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err.decode()
        assert b"locked" not in err and b"error" not in err, err.decode()
        assert out.decode().count("Saved reply number") == asks
    with ConversationStore.open() as store:
        sessions = store.list_sessions(limit=1000)
        assert len(sessions) == WRITERS * asks
        titles = {s.title for s in sessions}
        assert titles == {f"process {n} question {k}" for n in range(WRITERS) for k in range(asks)}
        for s in sessions:
            n = s.title.split()[1]
            assert [m.content for m in store.messages(s.id)] == [s.title, f"Saved reply number {n}"]
    assert integrity(default_store_path()) == "ok"


# ---------------------------------------------------------------- kill -9


HAMMER = """
import sys
from pathlib import Path
from gptcli.store import ConversationStore
with ConversationStore.open(Path(sys.argv[1])) as store:
    session = store.create_session(model="hammer")
    print(session.id, flush=True)
    n = 0
    while True:
        store.add_turn(session.id, f"question {n} " + "q" * 3000, f"answer {n} " + "a" * 9000)
        n += 1
"""


def test_kill_9_while_writing_keeps_the_file_sound_and_every_turn_whole(tmp_path: Path):
    path = tmp_path / "history.db"
    with ConversationStore.open(path) as store:
        earlier = store.create_session(model="m", title="earlier")
        store.add_turn(earlier.id, "keep me", "kept")
    for delay in (0.05, 0.2, 0.4, 0.7, 1.0):
        proc = python(HAMMER, str(path))
        assert proc.stdout is not None
        sid = proc.stdout.readline().decode().strip()
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert integrity(path) == "ok"
        with ConversationStore.open(path) as store:
            roles = [m.role for m in store.messages(sid)]
            assert roles == ["user", "assistant"] * (len(roles) // 2)  # never half a turn
            assert [m.content for m in store.messages(earlier.id)] == ["keep me", "kept"]
    with ConversationStore.open(path) as store:
        assert store.integrity_check() == "ok"
        assert store.search("kept")[0].session_id == earlier.id


# ---------------------------------------------------------------- a disk that refuses


@pytest.mark.parametrize(
    "limit, prompt, when",
    [
        (1024, "a question on a full disk", "cannot write the history file"),  # refused when opening
        (40_000, "a long question " * 4000, "cannot save to the history file"),  # refused when saving
    ],
)
def test_a_full_disk_is_a_notice_and_the_answer_still_comes(isolated_home: Path, limit: int, prompt: str, when: str):
    with ConversationStore.open() as store:
        info = store.create_session(model="m", title="before the disk filled")
        for n in range(20):
            store.add_turn(info.id, f"old question {n}", "old answer " * 100)
    # files may not grow past the limit: SQLite's shared-memory file or the write-ahead log cannot
    limit_files = f"""
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""
    proc = fake_gptcli("1", f"ask|{prompt}", prelude=limit_files)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    assert out.decode() == "Saved reply number 1\n"
    message = " ".join(err.decode().split())
    assert message.startswith(f"history not saved: {when} {default_store_path()}"), message
    assert "Traceback" not in message
    assert integrity(default_store_path()) == "ok"
    with ConversationStore.open() as store:
        assert [s.title for s in store.list_sessions()] == ["before the disk filled"]
        assert len(store.messages(info.id)) == 40


# ---------------------------------------------------------------- the real model: kill -9 and Ctrl-C


LONG_PROMPT = "Write a very long story about a dragon and a knight, with many chapters."


def start_long_reply(gptcli_bin: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [gptcli_bin, "ask", LONG_PROMPT, "-n", "2000", "--ctx", "2048", "--seed", "3", *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
    )


def read_some(proc: subprocess.Popen, at_least: int = 40, timeout: float = 240) -> bytes:
    """Read the reply as it streams until ``at_least`` bytes came (the model is mid-reply)."""
    assert proc.stdout is not None
    got = b""
    deadline = time.monotonic() + timeout
    while len(got) < at_least:
        assert time.monotonic() < deadline, "no output from the model in time"
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"the reply ended early: {got!r} {proc.stderr.read() if proc.stderr else b''!r}"
        got += chunk
    return got


@pytest.mark.model
def test_kill_9_during_a_real_reply_loses_only_that_reply(gptcli_bin: str):
    with ConversationStore.open() as store:
        earlier = []
        for n in range(3):
            info = store.create_session(model="smollm2", template="ask", system="s")
            store.add_turn(info.id, f"earlier question {n}", f"earlier answer {n}")
            earlier.append(info.id)
    proc = start_long_reply(gptcli_bin)
    read_some(proc)
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert integrity(default_store_path()) == "ok"
    with ConversationStore.open() as store:
        assert sorted(s.id for s in store.list_sessions()) == sorted(earlier)  # at most that reply lost
        for n, sid in enumerate(earlier):
            assert [m.content for m in store.messages(sid)] == [f"earlier question {n}", f"earlier answer {n}"]
        store.add_turn(earlier[0], "still writable?", "yes")  # and the file takes new turns


@pytest.mark.model
def test_ctrl_c_during_a_real_reply_exits_130_and_saves_the_partial_reply(gptcli_bin: str):
    proc = start_long_reply(gptcli_bin)
    first = read_some(proc)
    proc.send_signal(signal.SIGINT)
    out_rest, err = proc.communicate(timeout=120)
    printed = (first + out_rest).decode()
    assert proc.returncode == 130, err.decode()
    assert b"Traceback" not in err
    with ConversationStore.open() as store:
        (info,) = store.list_sessions()
        user, reply = store.messages(info.id)
    assert (user.role, user.content, user.interrupted) == ("user", LONG_PROMPT, False)
    assert reply.role == "assistant" and reply.interrupted is True
    assert len(reply.content) >= 40
    assert printed == reply.content + ("" if reply.content.endswith("\n") else "\n")  # what was shown is what was kept
    assert reply.completion_tokens and reply.completion_tokens < 2000
    assert info.title == make_title(LONG_PROMPT)
    assert info.model and info.template == "ask"
