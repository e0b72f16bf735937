"""Hostile input, round two (issue 26): each attack reproduced against the real pieces it targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptcli.models import Registry
from tests.hubserver import FakeHub, tiny_gguf  # noqa: F401

REPO = "acme/tiny-GGUF"


# ---------------------------------------------------------------- a hostile Hub


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-Q4_K_M.gguf").read_bytes()


@pytest.mark.parametrize("etag", ["../../../../victim", "..", "a/b", ".hidden"])
def test_a_hub_etag_with_a_path_never_writes_outside_the_cache(cli, hub, small_gguf, tmp_path, etag):
    victim = Path(os.environ["HF_HOME"]) / "victim"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("precious")
    before = {p for p in tmp_path.parent.rglob("*")}
    hub.etag = etag
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": small_gguf})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1, result.stdout
    assert "unsafe ETag" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_text() == "precious"
    assert Registry.load().models == {}
    assert not hub.downloads(), "a file was downloaded for a hostile ETag"
    assert {p for p in tmp_path.parent.rglob("*")} == before


def test_a_hub_that_changes_its_etag_to_a_path_after_the_check_writes_nothing_outside(cli, hub, small_gguf):
    hub.etag_later = "../../../../victim"
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": small_gguf})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 0, result.stderr  # the one answer that was checked is the one used
    assert not (Path(os.environ["HF_HOME"]) / "victim").exists()
    entry = Registry.load().models["tiny-q4_k_m"]
    cache = (Path(os.environ["HF_HOME"]) / "hub").resolve()
    assert cache in Path(entry.path).resolve().parents and Path(entry.path).read_bytes() == small_gguf


def test_a_hub_commit_or_file_name_with_a_path_is_refused(cli, hub, small_gguf):
    repo = hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": small_gguf})
    repo.commit = "../../../escaped"
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1 and "unsafe commit id" in result.stderr
    hub.add_repo("acme/other-GGUF", {"../../evil-Q4_K_M.gguf": small_gguf, "/abs-Q4_K_M.gguf": small_gguf})
    result = cli(["models", "pull", "acme/other-GGUF"])
    assert result.exit_code == 1 and "no GGUF files" in result.stderr, result.stderr
    assert not hub.downloads() and Registry.load().models == {}


def test_server_names_are_checked_before_they_touch_a_path():
    from gptcli.errors import ModelError
    from gptcli.hub import check_server_name

    for kind, bad in [("etag", "../x"), ("etag", "x/y"), ("etag", ""), ("commit", "main/../x"), ("file", "a/../../b"),
                      ("file", "/etc/passwd"), ("file", "a\\b"), ("file", "a//b"), ("file", "x\ny")]:
        with pytest.raises(ModelError):
            check_server_name(kind, bad, REPO)
    assert check_server_name("etag", "a" * 64, REPO) and check_server_name("file", "Q4/m-Q4_K_M.gguf", REPO)


# ---------------------------------------------------------------- crafted GGUF headers


def crafted_gguf(path: Path, *, nested: int = 0, **values: object) -> Path:
    """A small GGUF written with the ``gguf`` package, with ``llama.<key>`` values as given."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("crafted")
    base: dict[str, object] = {"context_length": 2048, "block_count": 2, "embedding_length": 8, "attention.head_count": 2}
    base.update(values)
    for key, value in base.items():
        if isinstance(value, str):
            writer.add_string(f"llama.{key}", value)
        elif isinstance(value, list):
            writer.add_array(f"llama.{key}", value)
        else:
            writer.add_uint32(f"llama.{key}", int(value))  # type: ignore[arg-type]
    if nested:
        deep: list[object] = [1]
        for _ in range(nested - 1):
            deep = [deep]
        writer.add_array("crafted.nested", deep)
    writer.add_tensor("blk.0.a.weight", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def deeply_nested_gguf(path: Path, depth: int) -> Path:
    """Arrays nested ``depth`` deep (the ``gguf`` writer itself recurses, so these bytes are written directly)."""
    import struct

    key = b"crafted.nested"
    body = struct.pack("<4sIQQ", b"GGUF", 3, 0, 1) + struct.pack("<Q", len(key)) + key + struct.pack("<I", 9)
    body += struct.pack("<IQ", 9, 1) * (depth - 1) + struct.pack("<IQI", 4, 1, 7)
    path.write_bytes(body + b"\0" * 32)
    return path


HOSTILE_HEADERS = {
    "100000 layers": ({"block_count": 100000}, "layers"),
    "zero layers": ({"block_count": 0}, "layers"),
    "a 2^40 context": ({"context_length": 2**31}, "context_length"),
    "a million heads": ({"attention.head_count": 1_000_000}, "head_count"),
    "per-layer heads for more layers than there are": ({"attention.head_count_kv": [2] * 9}, "9 values for 2 layers"),
    "more experts than llama.cpp holds": ({"expert_count": 5000, "expert_used_count": 2}, "expert"),
    "experts used but none declared": ({"expert_used_count": 4}, "expert"),
    "an unknown rope scaling": ({"rope.scaling.type": "bogus"}, "rope.scaling.type"),
}


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_a_crafted_header_llama_cpp_would_abort_on_is_refused(tmp_path, case):
    from gptcli.errors import ModelError
    from gptcli.ggufinfo import read_gguf

    values, reason = HOSTILE_HEADERS[case]
    path = crafted_gguf(tmp_path / "crafted.gguf", **values)
    for tensors in (True, False):
        with pytest.raises(ModelError, match=reason):
            read_gguf(path, tensors=tensors)
    read_gguf(crafted_gguf(tmp_path / "fine.gguf"))  # the same file with sane values reads


def test_arrays_nested_5000_deep_are_one_error_not_a_recursion_error(tmp_path, cli, monkeypatch):
    from gptcli.errors import ModelError
    from gptcli.ggufinfo import read_gguf

    read_gguf(crafted_gguf(tmp_path / "nested-ok.gguf", nested=3))  # a modest nesting reads
    path = deeply_nested_gguf(tmp_path / "nested.gguf", 5000)
    with pytest.raises(ModelError, match="nested"):
        read_gguf(path)
    for argv in (["models", "info", str(path)], ["ask", "hi", "--model", str(path)]):
        result = cli(argv)
        assert result.exit_code == 1, argv
        assert "nested" in result.stderr and "Traceback" not in result.stderr


def test_too_many_tensors_for_the_file_size_is_refused(tmp_path):
    import struct

    from gptcli.errors import ModelError
    from gptcli.ggufinfo import read_gguf

    path = tmp_path / "many.gguf"
    path.write_bytes(struct.pack("<4sIQQ", b"GGUF", 3, 1000, 0) + b"\0" * 4000)  # 1000 tensors need 32 kB of headers
    with pytest.raises(ModelError, match="absurd tensor count"):
        read_gguf(path)


def test_a_pulled_gguf_with_100000_layers_is_deleted_and_not_registered(cli, hub, tmp_path):
    data = crafted_gguf(tmp_path / "evil-Q4_K_M.gguf", block_count=100000).read_bytes()
    hub.add_repo(REPO, {"evil-Q4_K_M.gguf": data})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1 and "100000 layers" in result.stderr and "nothing was registered" in result.stderr
    assert Registry.load().models == {}
    cache = Path(os.environ["HF_HOME"]) / "hub"
    assert not list(cache.rglob("*.gguf")) and not list(cache.glob("models--*/blobs/*"))


# ---------------------------------------------------------------- a broken or hostile OpenAI-compatible server


@pytest.fixture
def server():
    from tests.remote_fake_server import FakeOpenAIServer

    fake = FakeOpenAIServer(reply="Hello from the remote fake.").start()
    yield fake
    fake.stop()


def saved_replies() -> list[tuple[str, bool]]:
    from gptcli.store import ConversationStore

    with ConversationStore.open() as store:
        session = store.latest_session()
        assert session is not None
        return [(m.content, m.interrupted) for m in store.messages(session.id) if m.role == "assistant"]


@pytest.mark.parametrize(
    "events, says",
    [
        (["{not json"], "malformed stream event"),
        (['{"id": "x", "choices": "oops"}'], "malformed stream event"),
        (['{"id": "x", "choices": [{"index": 0, "delta": {"content": 5}, "finish_reason": null}]}'], "malformed stream event"),
        (['{"id": "x", "choices": [], "usage": {"prompt_tokens": "many"}}'], "malformed stream event"),
        (['{"error": {"message": "CUDA out of memory", "type": "server_error"}}'], "reported an error in the middle of the reply: CUDA out of memory"),
    ],
)
def test_a_broken_stream_is_one_error_line_and_the_partial_reply_is_saved(cli, server, events, says):
    server.hostile_events = events
    result = cli(["ask", "Hi", "--engine", "remote", "--base-url", server.base_url])
    assert result.exit_code == 1
    assert result.stdout == "Hello from \n"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert saved_replies() == [("Hello from ", True)]


def test_a_server_ignoring_max_tokens_cannot_make_the_reply_grow_without_bound(cli, server):
    server.hostile_after = 0
    huge = "x" * 2_000_000
    server.hostile_events = [
        '{"id": "x", "choices": [{"index": 0, "delta": {"content": "%s"}, "finish_reason": null}]}' % huge,
        '{"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
    ]
    result = cli(["ask", "Hi", "-n", "8", "--engine", "remote", "--base-url", server.base_url])
    assert result.exit_code == 0, result.stderr
    assert 0 < len(result.stdout) <= 8 * 64 + 1
    ((text, _),) = saved_replies()
    assert len(text) <= 8 * 64


def test_an_api_key_echoed_in_another_letter_case_is_still_hidden(cli, server, monkeypatch):
    secret = "sk-Mixed-Case-Secret-7731"
    monkeypatch.setenv("GPTCLI_API_KEY", secret)
    server.status = 500
    server.status_body = {"error": {"message": f"upstream rejected key {secret.upper()} and {secret.lower()}"}}
    result = cli(["ask", "Hi", "--engine", "remote", "--base-url", server.base_url])
    assert result.exit_code == 1 and "***" in result.stderr
    assert secret.lower() not in result.stderr.lower()


def test_a_password_in_the_base_url_is_never_printed(cli, server, isolated_home):
    from tests.test_remote import free_port

    dead = f"http://bob:hunter2pw@127.0.0.1:{free_port()}/v1"
    outputs = [cli(["ask", "Hi", "--engine", "remote", "--base-url", dead])]
    (isolated_home / "config.toml").write_text(
        f'base_url = "{dead}"\nengine = "remote"\n[engines.box]\nbase_url = "bob:hunter2pw@127.0.0.1:9"\n'
    )
    for argv in (["config", "show"], ["config", "show", "--json"], ["config", "show", "base_url"], ["doctor"], ["doctor", "--json"],
                 ["ask", "Hi", "--base-url", "http://bob:hunter2pw@[bad"], ["ask", "Hi", "--engine", "box"]):
        outputs.append(cli(argv))
    text = "\n".join(r.stdout + r.stderr for r in outputs)
    assert "cannot reach the server at http://***@127.0.0.1" in outputs[0].stderr
    assert "***@127.0.0.1" in text and "bob" not in text and "hunter2pw" not in text, text


# ---------------------------------------------------------------- device files, FIFOs and inputs without end


def one_error_line(result, *needles: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["ask", "hi", "-f", "/dev/zero"], "/dev/zero is a character device, not a regular file"),
        (["translate", "/dev/urandom", "--to", "fr"], "/dev/urandom is a character device"),
        (["support", "why?", "--kb", "/dev/zero"], "/dev/zero is a character device"),
        (["summarize", "-f", "/dev/zero"], "/dev/zero is a character device"),
    ],
)
def test_device_files_are_refused_at_once_and_the_model_is_never_asked(cli, fake_engine, tmp_path, argv, needle):
    one_error_line(cli(argv), needle)
    assert fake_engine.calls == []


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["ask", "hi", "--schema", "~nosuchuser0/s.json"], "~nosuchuser0/s.json not found"),
        (["ask", "hi", "--grammar", "~nosuchuser0/g.gbnf"], "~nosuchuser0/g.gbnf not found"),
        (["ask", "hi", "-f", "~nosuchuser0/notes.txt"], "~nosuchuser0/notes.txt"),
        (["support", "why?", "--kb", "~nosuchuser0/faq.md"], "~nosuchuser0/faq.md"),
        (["translate", "~nosuchuser0/doc.md", "--to", "fr"], "~nosuchuser0/doc.md"),
    ],
)
def test_a_path_in_an_unknown_users_home_is_one_clear_line(cli, fake_engine, argv, needle):
    # Path.expanduser raises RuntimeError for ~someone who does not exist (found by the chat's property test: "/schema ~0")
    one_error_line(cli(argv), needle)
    assert fake_engine.calls == []


def test_a_glossary_that_is_a_device_is_refused(cli, fake_engine, tmp_path):
    source = tmp_path / "doc.md"
    source.write_text("Hello.\n")
    one_error_line(cli(["translate", str(source), "--to", "fr", "--glossary", "/dev/zero"]), "/dev/zero is a character device")
    assert fake_engine.calls == []


def test_a_fifo_as_input_is_refused_at_once_instead_of_hanging(run_gptcli, tmp_path):
    fifo = tmp_path / "input.md"
    os.mkfifo(fifo)
    for argv in (["ask", "hi", "-f", str(fifo)], ["translate", str(fifo), "--to", "fr"]):
        proc = run_gptcli(*argv, timeout=60)
        assert proc.returncode == 1
        assert "is a FIFO (named pipe), not a regular file" in proc.stderr and "Traceback" not in proc.stderr


def test_dev_zero_on_standard_input_stops_at_the_input_limit(gptcli_bin, tmp_path):
    import subprocess

    env = {**os.environ, "GPTCLI_MAX_INPUT_MB": "2"}
    for argv in (["ask", "hi"], ["translate", "-", "--to", "fr"]):
        with open("/dev/zero", "rb") as zero:
            proc = subprocess.run([gptcli_bin, *argv], stdin=zero, capture_output=True, env=env, timeout=120)
        stderr = proc.stderr.decode()
        assert proc.returncode == 1, stderr
        assert "standard input is larger than 2 MB, the input limit" in stderr and "max_input_mb" in stderr
        assert "Traceback" not in stderr and "MemoryError" not in stderr


def test_the_input_limit_is_a_setting_with_a_clear_message(cli, fake_engine, tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text("word " * 400_000)  # 2 MB
    monkeypatch.setenv("GPTCLI_MAX_INPUT_MB", "1")
    one_error_line(cli(["ask", "hi", "-f", str(big)]), f"{big} is larger than 1 MB, the input limit", "max_input_mb")
    assert fake_engine.calls == []
    monkeypatch.setenv("GPTCLI_MAX_INPUT_MB", "3")
    assert cli(["ask", "hi", "-f", str(big)]).exit_code == 0 and len(fake_engine.calls) == 1
    monkeypatch.delenv("GPTCLI_MAX_INPUT_MB")
    assert "max_input_mb" in cli(["config", "show"]).stdout


# ---------------------------------------------------------------- the templates folder


def user_templates(home: Path) -> Path:
    folder = home / "templates"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_a_fifo_named_like_a_template_hangs_nothing(run_gptcli, isolated_home):
    os.mkfifo(user_templates(isolated_home) / "x.toml")
    listed = run_gptcli("templates", "list", timeout=60)
    assert listed.returncode == 0 and "x.toml: not a regular file" in listed.stdout + listed.stderr
    shown = run_gptcli("templates", "show", "x", "--raw", timeout=60)
    assert shown.returncode == 1 and "not a regular file" in shown.stderr
    asked = run_gptcli("ask", "hi", "-t", "x", timeout=60)
    assert asked.returncode == 1 and "not a regular file" in asked.stderr and "Traceback" not in asked.stderr


def test_a_100_mb_template_does_not_slow_other_commands(cli, fake_engine, isolated_home):
    import time

    huge = user_templates(isolated_home) / "huge.toml"
    with huge.open("wb") as f:  # 100 MB, written sparsely: the size is what counts
        f.truncate(100_000_000)
    started = time.perf_counter()
    assert cli(["ask", "hi"]).exit_code == 0
    listed = cli(["templates", "list"])
    assert time.perf_counter() - started < 5
    assert listed.exit_code == 0 and "too large for a template" in listed.stdout + listed.stderr
    one_error_line(cli(["ask", "hi", "-t", "huge"]), "100 MB is too large for a template")


def test_asking_with_one_template_reads_only_its_file(cli, fake_engine, isolated_home, monkeypatch):
    from gptcli import templates

    (user_templates(isolated_home) / "mine.toml").write_text('user = "Mine: {input}"\n')
    (user_templates(isolated_home) / "other.toml").write_text('user = "Other: {input}"\n')
    read: list[str] = []
    real = templates.read_template_file
    monkeypatch.setattr(templates, "read_template_file", lambda path: read.append(path.name) or real(path))
    assert cli(["ask", "hi", "-t", "mine"]).exit_code == 0
    assert read == ["mine.toml"] and fake_engine.calls[-1][-1]["content"] == "Mine: hi"


# ---------------------------------------------------------------- history export -o


def test_history_export_writes_0600_and_never_replaces_a_file_without_force(cli, fake_engine, tmp_path):
    assert cli(["ask", "hi"]).exit_code == 0
    session = cli(["history", "list", "--json"]).stdout
    import json

    first = json.loads(session.splitlines()[0]) if session.lstrip().startswith("{") else json.loads(session)[0]
    sid = first["id"]
    out = tmp_path / "chat.md"
    old = os.umask(0)
    try:
        result = cli(["history", "export", sid, "-o", str(out)])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and "hi" in out.read_text()
    out.write_text("my notes")
    out.chmod(0o600)
    one_error_line(cli(["history", "export", sid, "-o", str(out)]), "already exists: use --force")
    assert out.read_text() == "my notes"
    assert cli(["history", "export", sid, "-o", str(out), "--force"]).exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o600 and "hi" in out.read_text()


# ---------------------------------------------------------------- standard output full or closed early


def run_with_stdout(gptcli_bin: str, argv: list[str], stdout: object, timeout: float = 120):
    import subprocess

    return subprocess.run([gptcli_bin, *argv], stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout)


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_full_stdout_is_one_error_line_and_the_reply_is_still_saved(gptcli_bin, server, json_lines):
    argv = ["ask", "Hi", "--engine", "remote", "--base-url", server.base_url] + (["--json"] if json_lines else [])
    with open("/dev/full", "w") as full:
        proc = run_with_stdout(gptcli_bin, argv, full)
    stderr = proc.stderr.decode()
    assert proc.returncode == 1, stderr
    assert stderr.strip().splitlines() == ["error: cannot write to standard output: No space left on device"]
    ((text, interrupted),) = saved_replies()
    assert text.startswith("Hello") and interrupted


def test_other_commands_on_a_full_stdout_are_one_error_line(gptcli_bin):
    for argv in (["templates", "list"], ["config", "show"], ["models", "list"], ["doctor", "--json"]):
        with open("/dev/full", "w") as full:
            proc = run_with_stdout(gptcli_bin, argv, full)
        assert proc.returncode == 1, (argv, proc.stderr)
        assert proc.stderr.decode().strip().splitlines() == ["error: cannot write to standard output: No space left on device"], argv


def test_a_chat_on_a_full_stdout_keeps_the_turn_and_ends_with_one_error_line(gptcli_bin, server):
    import subprocess

    with open("/dev/full", "w") as full:
        proc = subprocess.run([gptcli_bin, "chat", "--engine", "remote", "--base-url", server.base_url],
                              input=b"first\nsecond\n", stdout=full, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip().splitlines() == ["error: cannot write to standard output: No space left on device"]
    from gptcli.store import ConversationStore

    with ConversationStore.open() as store:
        session = store.latest_session()
        assert session is not None
        assert [m.content for m in store.messages(session.id) if m.role == "user"] == ["first"]


def test_stdout_closed_early_still_saves_the_reply(gptcli_bin, server):
    import subprocess

    server.reply = " ".join(["word"] * 300)
    server.delay = 0.002
    proc = subprocess.Popen(
        [gptcli_bin, "ask", "Hi", "--engine", "remote", "--base-url", server.base_url],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.read(5) == b"word "
    proc.stdout.close()  # `| head -c 5`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and b"Traceback" not in err, err
    ((text, _),) = saved_replies()
    assert text.startswith("word word")


def test_a_raw_completion_on_a_closed_or_full_stdout_ends_as_the_chat_does(gptcli_bin, server):
    # `complete` keeps no history, so the failure cut mid-reply is what it reports: quiet for a
    # reader that left, one line for a full disk (never "an unexpected error")
    import subprocess

    server.reply = " ".join(["word"] * 300)
    server.delay = 0.002
    command = [gptcli_bin, "complete", "The sky is", "--engine", "remote", "--base-url", server.base_url]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.read(5) == b"word "
    proc.stdout.close()  # `| head -c 5`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b"", err
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=full, stderr=subprocess.PIPE, timeout=60)
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines() == ["error: cannot write to standard output: No space left on device"]


# ---------------------------------------------------------------- a full data folder under translate


@pytest.fixture
def full_data_folder(tmp_path, monkeypatch):
    """GPTCLI_HOME on a 256 kB tmpfs filled to the last byte (a real full disk); where mounting is not
    allowed, the same ENOSPC injected into every write under the folder."""
    import errno
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(home)], capture_output=True).returncode == 0
    monkeypatch.setenv("GPTCLI_HOME", str(home))
    (home / "translations").mkdir(mode=0o700)
    if mounted:
        fd = os.open(home / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
    else:
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            if os.readlink(f"/proc/self/fd/{fd}").startswith(str(home)):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_write(fd, data)

        monkeypatch.setattr("gptcli.translate.os.write", write)
    try:
        yield home
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(home)], capture_output=True)


def test_a_full_data_folder_only_warns_and_the_translation_is_written(cli, tmp_path, monkeypatch, full_data_folder):
    from tests.test_reliability_faults import make_document
    from tests.test_translate import ScriptedTranslator

    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: ScriptedTranslator(transform=str.upper))
    monkeypatch.setattr("gptcli.translate.checks.detect_language", lambda text: None)  # upper case is no French
    source = make_document(tmp_path, paragraphs=6)
    out = tmp_path / "guide.fr.md"
    result = cli(["translate", str(source), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == source.read_text().upper()
    assert "warning: cannot write the translation cache" in result.stderr and "No space left on device" in result.stderr
    assert "Traceback" not in result.stderr and "error:" not in result.stderr


# ---------------------------------------------------------------- chat: untrusted pipes, two writers


def test_piped_slash_lines_are_messages_unless_commands_is_given(cli, fake_engine, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    result = cli(["chat"], stdin=f"hello\n/export {target}\n/set temperature 3\n")
    assert result.exit_code == 0, result.stderr
    assert target.read_text() == "precious"
    assert [call[-1]["content"] for call in fake_engine.calls] == ["hello", f"/export {target}", "/set temperature 3"]
    export = tmp_path / "chat.md"
    result = cli(["chat", "--commands"], stdin=f"hello\n/export {export}\n")
    assert result.exit_code == 0 and "hello" in export.read_text()


def test_two_chats_on_one_conversation_at_once_the_second_is_refused(gptcli_bin, server):
    import subprocess

    remote = ["--engine", "remote", "--base-url", server.base_url]
    first = subprocess.run([gptcli_bin, "chat", *remote], input=b"A0\n", capture_output=True, timeout=60)
    assert first.returncode == 0, first.stderr
    holder = subprocess.Popen([gptcli_bin, "chat", "-c", *remote], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(b"A1\n")
    holder.stdin.flush()
    assert holder.stdout.readline().startswith(b"Hello")  # A is in the conversation, waiting for its next line
    second = subprocess.run([gptcli_bin, "chat", "-c", *remote], input=b"B1\n", capture_output=True, timeout=60)
    assert second.returncode == 1
    assert "is open in another gptcli chat" in second.stderr.decode() and f"process {holder.pid}" in second.stderr.decode()
    holder.stdin.write(b"A2\n")
    holder.stdin.close()
    holder.wait(timeout=60)
    after = subprocess.run([gptcli_bin, "chat", "-c", *remote], input=b"B1\n", capture_output=True, timeout=60)
    assert after.returncode == 0, after.stderr  # A ended: its lock went with it
    from gptcli.store import ConversationStore

    with ConversationStore.open() as store:
        session = store.latest_session()
        assert session is not None
        users = [m.content for m in store.messages(session.id) if m.role == "user"]
    assert users == ["A0", "A1", "A2", "B1"]


# ---------------------------------------------------------------- escape sequences from a model or a server

HOSTILE_REPLY = "Done.\x1b[2J\x1b[31mred\x1b]0;pwned\x07 \x9b6n"


def test_escape_sequences_in_a_reply_are_shown_not_run_on_a_terminal(cli, fake_engine):
    fake_engine.replies = [HOSTILE_REPLY]
    for argv in (["ask", "hi"], ["ask", "hi", "--plain"], ["ask", "hi", "--no-stream"]):
        shown = cli(argv, tty=True)
        assert shown.exit_code == 0, shown.stderr
        for sequence in ("\x1b[2J", "\x1b[31m", "\x1b]0;", "\x07", "\x9b"):
            assert sequence not in shown.stdout, (argv, shown.stdout)
        assert "␛[2J" in shown.stdout and "␛]0;pwned␇" in shown.stdout
    piped = cli(["ask", "hi"])  # a pipe gets the text as it came
    assert piped.stdout == HOSTILE_REPLY + "\n"
    raw = cli(["--raw", "ask", "hi", "--plain"], tty=True)  # asked for: raw on a terminal too
    assert raw.stdout == HOSTILE_REPLY + "\n"
    from gptcli.store import ConversationStore

    with ConversationStore.open() as store:  # the history keeps the reply exactly
        session = store.latest_session()
        assert session is not None
        assert [m.content for m in store.messages(session.id) if m.role == "assistant"] == [HOSTILE_REPLY]
        sid = session.id
    history = cli(["history", "show", sid], tty=True)
    assert "\x1b[2J" not in history.stdout and "␛[2J" in history.stdout


def test_escape_sequences_in_a_server_error_are_shown_not_run(cli, server):
    server.status = 500
    server.status_body = {"error": {"message": "boom\x1b[2J\x1b]0;pwned\x07"}}
    result = cli(["ask", "Hi", "--engine", "remote", "--base-url", server.base_url])
    assert result.exit_code == 1 and "boom␛[2J␛]0;pwned␇" in result.stderr and "\x1b" not in result.stderr


def test_a_remote_reply_with_escape_sequences_is_sanitised_on_a_terminal(cli, server):
    server.reply = "Hello \x1b[2Jworld"
    shown = cli(["ask", "Hi", "--plain", "--engine", "remote", "--base-url", server.base_url], tty=True)
    assert "\x1b[2J" not in shown.stdout and "␛[2J" in shown.stdout


# ---------------------------------------------------------------- a chat template that asks for all the memory


@pytest.mark.parametrize(
    "template, says",
    [
        ("{{ 'x' * 10**10 }}", "10,000,000,000 characters"),
        ("{{ 10**10 * 'x' }}", "characters"),
        ("{{ ['a'] * 10**9 }}", "items"),
        ("{{ 7 ** 100000000 }}", "bits"),
        ("{{ 'x'|center(10**10) }}", "'center' filter"),
        ("{% set s = 'x' * 9000000 %}{{ s + s }}", "joins values"),
    ],
)
def test_a_chat_template_asking_for_unbounded_memory_is_refused_with_a_reason(template, says):
    import time

    from gptcli.engines.chat_template import BoundedSandboxedEnvironment, TemplateTooLarge, failure_reason

    started = time.perf_counter()
    with pytest.raises(TemplateTooLarge, match=says) as caught:
        BoundedSandboxedEnvironment().from_string(template).render(messages=[])
    assert time.perf_counter() - started < 2
    assert failure_reason(caught.value)
    assert failure_reason(MemoryError()) == "it ran out of memory"


def test_the_bounded_sandbox_renders_a_real_chat_template_as_before():
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from gptcli.ggufinfo import read_gguf
    from gptcli.models import embedded_model_path
    from gptcli.engines.chat_template import BoundedSandboxedEnvironment

    template = read_gguf(embedded_model_path(), tensors=False).chat_template
    assert template
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi " * 1000}]
    args = {"messages": messages, "add_generation_prompt": True, "bos_token": "", "eos_token": ""}
    expected = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(**args)
    bounded = BoundedSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template).render(**args)
    assert bounded == expected and "hi hi" in bounded


def test_a_resumed_chat_shows_stored_escape_sequences_without_running_them(fake_engine):
    from gptcli.config import load_settings
    from gptcli.conversation import Turn
    from gptcli.render import Env
    from gptcli.repl import ChatSession
    from tests.conftest import TextStream

    env = Env(stdin=TextStream(tty=True), stdout=TextStream(tty=True), stderr=TextStream())
    chat = ChatSession(load_settings(), env, interactive=True)
    chat.show_turns([Turn("hi\x1b[2J", HOSTILE_REPLY)])
    shown = env.stdout.getvalue()  # type: ignore[attr-defined]
    assert "\x1b[2J" not in shown and "␛[2J" in shown and "hi␛[2J" in shown
