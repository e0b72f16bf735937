"""Privacy: private files, no network except `models pull` and the remote engine, secrets never written.

The network test blocks sockets twice: in-process (every command through the ``cli`` fixture and the
fake engine) and in real processes of the installed executable with the real model, through a
``sitecustomize`` on ``PYTHONPATH`` that installs the same guard before gptcli starts.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gptcli.models import embedded_model_path
from gptcli.store import ConversationStore, default_store_path

SECRET_HF = "hf_SeCrEtTokenValue1234567890abcdef"
SECRET_API = "sk-SeCrEtApiKey-0987654321-zyxwvu"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- file modes


@pytest.fixture
def loose_umask():
    """A user whose umask gives everything away: private files must stay private anyway."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_history_database_is_0600_in_a_0700_folder_whatever_the_umask(cli, fake_engine, isolated_home, loose_umask):
    home = isolated_home / "fresh"
    os.environ["GPTCLI_HOME"] = str(home)  # restored by the autouse fixture's monkeypatch
    assert cli(["ask", "hello"]).exit_code == 0
    db = default_store_path()
    assert db.parent == home
    assert mode(home) == 0o700 and mode(db) == 0o600
    for sidecar in home.glob("history.db-*"):  # SQLite's -wal and -shm, while open
        assert mode(sidecar) & 0o077 == 0, sidecar


def test_loose_permissions_on_an_existing_history_are_tightened(cli, fake_engine, isolated_home):
    assert cli(["ask", "hello"]).exit_code == 0
    db = default_store_path()
    db.chmod(0o644)
    isolated_home.chmod(0o755)
    assert cli(["ask", "again"]).exit_code == 0
    assert mode(db) == 0o600 and mode(isolated_home) == 0o700


def test_input_history_of_the_chat_prompt_is_0600(isolated_home, loose_umask):
    from gptcli.chat.prompt import input_history_path

    path = input_history_path()
    assert path.parent == isolated_home
    assert mode(path) == 0o600 and mode(isolated_home) == 0o700
    path.chmod(0o666)
    assert mode(input_history_path()) == 0o600


class _StatefulEngine:
    def state_key(self) -> dict:
        return {"model": "m", "n_ctx": 512}

    def export_state(self) -> tuple[list[int], bytes]:
        return [1, 2, 3], b"kv-cells" * 100

    def import_state(self, tokens: list[int], data: bytes) -> bool:
        return True


def test_saved_kv_states_are_0600_in_a_0700_folder(isolated_home, loose_umask):
    from gptcli.kvstate import KVStateStore

    store = KVStateStore()
    saved = store.save("session-1", _StatefulEngine())
    assert saved is not None and saved.parent == isolated_home / "kv"
    assert mode(saved) == 0o600 and mode(saved.parent) == 0o700
    assert store.load("session-1", _StatefulEngine()) == 3
    assert [p.name for p in saved.parent.iterdir()] == ["session-1.kv"]  # no temporary left


def test_translation_cache_and_model_registry_are_private(cli, isolated_home, tmp_path, monkeypatch, loose_umask):
    from tests.test_translate import ScriptedTranslator

    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: ScriptedTranslator())
    source = tmp_path / "doc.md"
    source.write_text("Some private words.\n")
    assert cli(["translate", str(source), "--to", "fr"]).exit_code == 0
    folder = isolated_home / "translations"
    (cache,) = folder.glob("*.jsonl")
    assert mode(folder) == 0o700 and mode(cache) == 0o600
    assert cli(["models", "add", str(embedded_model_path()), "--alias", "mine"]).exit_code == 0
    (registry,) = isolated_home.glob("models.json")
    assert mode(registry) == 0o600


def test_config_file_written_by_config_set_is_private(cli, isolated_home, loose_umask):
    assert cli(["config", "set", "temperature", "0.3"]).exit_code == 0
    assert mode(isolated_home / "config.toml") == 0o600


# ---------------------------------------------------------------- no network


class SocketGuard:
    """Every way Python opens a network connection or resolves a name, refused and recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.attempts: list[str] = []
        for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket.socket, "sendto"),
                            (socket, "create_connection"), (socket, "getaddrinfo"), (socket, "gethostbyname")):
            monkeypatch.setattr(owner, name, self._refuse(f"{getattr(owner, '__name__', owner)}.{name}"))

    def _refuse(self, what: str):
        def refuse(*args, **kwargs):
            self.attempts.append(f"{what}{args[1:] if args and isinstance(args[0], socket.socket) else args}")
            raise OSError(errno.ENETUNREACH, f"network blocked by the test ({what})")

        return refuse


@pytest.fixture
def guard(monkeypatch: pytest.MonkeyPatch) -> SocketGuard:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online, as a user is: still nothing may connect
    return SocketGuard(monkeypatch)


def test_every_command_but_pull_and_the_remote_engine_stays_off_the_network(cli, fake_engine, guard, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR", "true")
    monkeypatch.setenv("VISUAL", "true")
    kb = tmp_path / "faq.md"
    kb.write_text("# Refunds\n\nRefunds take five days.\n")
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nA paragraph to translate.\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("- meeting on Friday\n")
    model = str(embedded_model_path())
    fake_engine.replies = ["A reply."]
    runs: list[tuple[list[str], str | None]] = [
        (["--version"], None),
        (["--help"], None),
        (["ask", "hi"], None),
        (["ask", "hi", "--json", "--stats"], None),
        (["ask", "summarize", "--file", str(notes)], None),
        (["draft", "an email"], "notes\n"),
        (["summarize"], "a text\n"),
        (["rewrite", "friendlier"], "a text\n"),
        (["proofread"], "a txt\n"),
        (["reply", "say yes"], "can you come?\n"),
        (["complete", "The sky is"], None),
        (["support", "How long do refunds take?", "--kb", str(kb), "--show-sources"], None),
        (["translate", str(doc), "--to", "fr", "-o", str(tmp_path / "doc.fr.md")], None),
        (["translate", "--to", "de"], "Hello.\n"),
        (["chat", "--commands"], "hello\n/tokens\n/set temperature 0.2\n/sessions\n/help\n/exit\n"),
        (["chat", "--continue"], "once more\n"),
        (["history", "list"], None),
        (["history", "list", "--json"], None),
        (["history", "search", "hello"], None),
        (["history", "path"], None),
        (["config", "show"], None),
        (["config", "show", "--json"], None),
        (["config", "path"], None),
        (["config", "set", "temperature", "0.5"], None),
        (["config", "unset", "temperature"], None),
        (["templates", "list"], None),
        (["templates", "show", "draft"], None),
        (["templates", "render", "draft", "some notes"], None),
        (["templates", "path"], None),
        (["templates", "new", "mine"], None),
        (["models", "list"], None),
        (["models", "list", "--json"], None),
        (["models", "info", model], None),
        (["models", "add", model, "--alias", "local-copy"], None),
        (["models", "default", "local-copy"], None),
        (["models", "info"], None),
        (["models", "rm", "local-copy", "--yes"], None),
        (["models", "info", "acme/not-pulled-GGUF"], None),  # a repository that is not in the cache: an error, offline
        (["doctor"], None),
        (["doctor", "--json"], None),
    ]
    failures = []
    for argv, stdin in runs:
        result = cli(argv, stdin=stdin)
        if "Traceback" in result.stderr:
            failures.append((argv, result.stderr))
        if argv[:3] == ["models", "info", "acme/not-pulled-GGUF"]:
            assert result.exit_code == 1
            continue
        if result.exit_code not in (0,) and argv != ["--help"]:
            failures.append((argv, result.exit_code, result.stderr))
    with ConversationStore.open() as store:
        sessions = store.list_sessions(limit=100)
        assert len(sessions) >= 3
        for session in sessions[:2]:
            exported = cli(["history", "export", session.id, "-o", str(tmp_path / f"{session.id}.md")])
            assert exported.exit_code == 0, exported.stderr
            assert cli(["history", "show", session.id]).exit_code == 0
        assert cli(["history", "rename", sessions[0].id, "renamed"]).exit_code == 0
        assert cli(["history", "rm", sessions[0].id, "--yes"]).exit_code == 0
    assert failures == []
    assert guard.attempts == [], guard.attempts


def test_the_guard_catches_a_connection(guard):
    """The guard itself works: a connection attempt is refused and recorded."""
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(OSError):
        socket.socket().connect(("127.0.0.1", 9))
    assert len(guard.attempts) == 2


SITECUSTOMIZE = '''
"""Installed by tests/test_privacy.py: record and refuse every network connection of this process."""
import errno, os, socket

_LOG = os.environ["GPTCLI_TEST_NETLOG"]


def _refuse(what):
    def refuse(*args, **kwargs):
        with open(_LOG, "a") as f:
            f.write(f"{os.getpid()} {what} {args[1:] if args and isinstance(args[0], socket.socket) else args}\\n")
        raise OSError(errno.ENETUNREACH, "network blocked by the test")
    return refuse


for _owner, _name in ((socket.socket, "connect"), (socket.socket, "connect_ex"), (socket.socket, "sendto"),
                      (socket, "create_connection"), (socket, "getaddrinfo"), (socket, "gethostbyname")):
    setattr(_owner, _name, _refuse(_name))
'''


@pytest.fixture
def guarded_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    folder = tmp_path / "guard"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "network.log"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update({"PYTHONPATH": str(folder), "GPTCLI_TEST_NETLOG": str(log)})
    return env, log


def test_the_sitecustomize_guard_works_in_a_child_process(guarded_env):
    env, log = guarded_env
    proc = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9))"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "network blocked by the test" in proc.stderr
    assert "create_connection" in log.read_text()


@pytest.mark.model
def test_the_real_executable_with_the_real_model_never_connects(gptcli_bin, guarded_env, tmp_path):
    env, log = guarded_env
    doc = tmp_path / "doc.md"
    doc.write_text("Good morning.\n")
    fast = ["-n", "8", "--ctx", "512", "--seed", "1"]
    runs = [
        (["ask", "Name a colour.", *fast], b""),
        (["chat", *fast], b"Say hello.\n"),
        (["translate", str(doc), "--to", "fr", *fast], b""),
        (["summarize", *fast], b"The meeting moved to Friday at ten.\n"),
        (["models", "list"], b""),
        (["models", "info"], b""),
        (["history", "list"], b""),
        (["doctor"], b""),
        (["config", "show"], b""),
    ]
    for argv, stdin in runs:
        proc = subprocess.run([gptcli_bin, *argv], input=stdin, env=env, capture_output=True, timeout=240)
        assert proc.returncode == 0, (argv, proc.stderr.decode())
        assert b"Traceback" not in proc.stderr
    assert not log.exists() or log.read_text() == "", log.read_text()


# ---------------------------------------------------------------- secrets


def everything_written(folder: Path) -> bytes:
    """Every byte of every file under ``folder`` (history, its WAL, caches, registry, config)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_secrets_in_the_environment_never_reach_output_history_or_files(cli, fake_engine, isolated_home, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_TOKEN", SECRET_HF)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SECRET_HF)
    monkeypatch.setenv("GPTCLI_API_KEY", SECRET_API)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_API)
    fake_engine.replies = ["A reply."]
    outputs = []
    for argv, stdin in [
        (["--verbose", "ask", "hi", "--json"], None),
        (["ask", "hi", "--model", "no-such-model", "--json"], None),  # an error, as a JSON event too
        (["chat", "--commands", "--json"], "hello\n/sessions\n"),
        (["config", "show"], None),
        (["config", "show", "--json"], None),
        (["doctor"], None),
        (["doctor", "--json"], None),
        (["models", "list", "--json"], None),
        (["history", "list", "--json"], None),
        (["ask", "hi", "--engine", "remote"], None),  # no --base-url: an error that must not echo the key
    ]:
        result = cli(argv, stdin=stdin)
        outputs.append(result.stdout + result.stderr)
    with ConversationStore.open() as store:
        (latest, *_) = store.list_sessions()
        outputs.append(cli(["history", "export", latest.id, "-F", "json"]).stdout)
    text = "\n".join(outputs)
    assert "A reply." in text  # the commands did run
    for secret in (SECRET_HF, SECRET_API):
        assert secret not in text
        assert secret.encode() not in everything_written(isolated_home)


def test_a_key_named_in_a_profile_is_read_from_the_environment_never_stored(cli, isolated_home, monkeypatch):
    """A profile names the variable holding the key; the key itself is refused in the file."""
    config = isolated_home / "config.toml"
    config.write_text(f'[engines.box]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "{SECRET_API}"\n')
    result = cli(["ask", "hi", "--engine", "box"])
    assert result.exit_code == 1
    assert "api_key_env must be the NAME of an environment variable" in result.stderr
    assert SECRET_API not in result.stderr


# ---------------------------------------------------------------- nothing is evaluated


def test_template_variables_and_input_are_never_evaluated(cli, fake_engine, tmp_path):
    """Format specifiers, attribute lookups and Jinja in input and -v values stay text."""
    marker = tmp_path / "pwned"
    payloads = [
        "{__class__.__mro__[1].__subclasses__}",
        "{0.__globals__}",
        "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}",
        "{% import os %}{{ os.system('touch " + str(marker) + "') }}",
        "%(x)s %s %d",
        "__import__('os').system('touch " + str(marker) + "')",
    ]
    for payload in payloads:
        result = cli(["draft", payload, "-v", f"tone={payload}"], stdin=payload + "\n")
        assert result.exit_code == 0, result.stderr
        everything = "\n".join(m["content"] for m in fake_engine.calls[-1])
        assert everything.count(payload) >= 2
        result = cli(["ask", payload])
        assert fake_engine.calls[-1][-1]["content"] == payload
    assert not marker.exists()
