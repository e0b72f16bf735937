"""Bad input files through ask, draft, summarize and translate: one clear error line, or a sane reading.

Every error case checks the same promise: exit code 1, exactly one ``error:`` line on stderr, no
traceback, and the model never asked (nothing was sent, nothing half-done).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

# ask and draft and summarize read --file; translate takes the file as its argument
COMMANDS = {
    "ask": lambda path: ["ask", "what does it say?", "--file", path],
    "draft": lambda path: ["draft", "--file", path],
    "summarize": lambda path: ["summarize", "--file", path],
    "translate": lambda path: ["translate", path, "--to", "fr"],
}


def assert_one_error_line(result, *needles: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def sent_text(fake_engine) -> str:
    """Everything the engine was asked, joined (the material sits in the last user message)."""
    return "\n".join(m["content"] for m in fake_engine.calls[-1])


# ---------------------------------------------------------------- errors: nothing reaches the model


def _unix_socket(path: Path) -> socket.socket:
    """A socket file: open() fails with ENXIO for every user, root included."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path.name)  # relative to the test's working folder: short enough for AF_UNIX
    return sock


CASES = {
    "missing": (lambda p: None, ["no such file"]),
    "directory": (lambda p: p.mkdir(), ["is a directory, not a file"]),
    "binary": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))), ["looks like a binary file"]),
    "invalid-utf8": (lambda p: p.write_bytes("Un café crème.\n".encode("latin-1")), ["is not valid UTF-8 (byte 6)"]),
    "symlink-loop": (lambda p: p.symlink_to(p), ["cannot read", "symbolic links"]),
    "socket": (_unix_socket, ["cannot read", "No such device or address"]),
    "utf16-without-bom": (lambda p: p.write_bytes("Hello there.\n".encode("utf-16-le")), ["UTF-16", "byte-order mark"]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_file_is_one_error_line_and_the_model_is_never_asked(cli, fake_engine, tmp_path, monkeypatch, command, case):
    monkeypatch.chdir(tmp_path)
    setup, needles = CASES[case]
    path = tmp_path / "input.md"
    keep = setup(path)
    try:
        result = cli(COMMANDS[command](str(path)))
    finally:
        if isinstance(keep, socket.socket):
            keep.close()
    assert_one_error_line(result, *needles)
    assert fake_engine.calls == []
    if case == "invalid-utf8":  # only translate has --encoding, so only translate suggests it
        assert ("--encoding" in result.stderr) == (command == "translate")


def test_permission_denied_is_named(cli, fake_engine, tmp_path, monkeypatch):
    """A file the user may not read. Root reads a 0000 file anyway, so EACCES is raised by the read itself."""
    path = tmp_path / "secret.txt"
    path.write_text("top secret\n")
    path.chmod(0)
    if os.geteuid() == 0:  # root bypasses the mode bits: refuse the read the way the kernel would
        real = os.open

        def refuse(file: object, *args: object, **kwargs: object) -> int:
            if Path(os.fsdecode(file)) == path:  # type: ignore[arg-type]
                raise PermissionError(13, "Permission denied", str(file))
            return real(file, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr("gptcli.textio.os.open", refuse)
    for command in COMMANDS:
        result = cli(COMMANDS[command](str(path)))
        assert_one_error_line(result, f"cannot read {path}: permission denied")
    assert fake_engine.calls == []


@pytest.mark.parametrize("command", ["ask", "draft", "summarize"])
def test_an_empty_file_is_an_error_for_the_writing_commands(cli, fake_engine, tmp_path, command):
    for text in ("", "  \n\n\t\n"):
        path = tmp_path / "empty.txt"
        path.write_text(text)
        result = cli(COMMANDS[command](str(path)))
        assert_one_error_line(result, f"{path} is empty")
    assert fake_engine.calls == []


def test_an_empty_file_translates_to_an_empty_file_with_a_notice(cli, fake_engine, tmp_path):
    path = tmp_path / "empty.md"
    path.write_text("")
    out = tmp_path / "empty.fr.md"
    result = cli(["translate", str(path), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert "is empty: nothing to translate" in result.stderr
    assert out.read_bytes() == b"" and fake_engine.calls == []


# ---------------------------------------------------------------- readable: what the model receives


@pytest.mark.parametrize("command", ["ask", "draft", "summarize"])
@pytest.mark.parametrize("codec, bom", [("utf-16-le", "\ufeff"), ("utf-16-be", "\ufeff"), ("utf-8", "\ufeff")])
def test_utf16_and_utf8_with_a_bom_are_read_as_text(cli, fake_engine, tmp_path, command, codec, bom):
    path = tmp_path / "notes.txt"
    path.write_bytes((bom + "Réunion déplacée à vendredi. 会议改到周五。\n").encode(codec))
    result = cli(COMMANDS[command](str(path)))
    assert result.exit_code == 0, result.stderr
    sent = sent_text(fake_engine)
    assert "Réunion déplacée à vendredi. 会议改到周五。" in sent
    assert "\ufeff" not in sent and "\x00" not in sent


@pytest.mark.parametrize("command", ["ask", "draft", "summarize"])
def test_crlf_files_reach_the_model_with_plain_newlines(cli, fake_engine, tmp_path, command):
    path = tmp_path / "dos.txt"
    path.write_bytes(b"first line\r\nsecond line\r\n")
    result = cli(COMMANDS[command](str(path)))
    assert result.exit_code == 0, result.stderr
    sent = sent_text(fake_engine)
    assert "first line\nsecond line" in sent and "\r" not in sent


def test_crlf_survives_translation_byte_for_byte(cli, fake_engine, tmp_path, monkeypatch):
    from tests.test_translate import ScriptedTranslator

    echo = ScriptedTranslator(transform=lambda text: text)
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: echo)
    path = tmp_path / "dos.md"
    path.write_bytes(b"# Title\r\n\r\nFirst paragraph.\r\n\r\nSecond one.\r\n")
    out = tmp_path / "dos.fr.md"
    result = cli(["translate", str(path), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == path.read_bytes()


def test_the_encoding_option_reads_latin1_for_translate(cli, fake_engine, tmp_path, monkeypatch):
    from tests.test_translate import ScriptedTranslator

    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: ScriptedTranslator(transform=str.upper))
    path = tmp_path / "latin.txt"
    path.write_bytes("Un café crème.\n".encode("latin-1"))
    result = cli(["translate", str(path), "--to", "en", "--encoding", "latin-1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "UN CAFÉ CRÈME.\n"


# ---------------------------------------------------------------- a file that changes while it is read


def test_a_file_growing_while_it_is_read_gives_a_whole_snapshot(cli, fake_engine, tmp_path):
    """A log another process appends to: gptcli reads what is there (whole lines), no hang, no error."""
    path = tmp_path / "growing.log"
    line = "event number {n:06d} happened\n"
    path.write_text("".join(line.format(n=n) for n in range(20_000)))
    stop = threading.Event()

    def appender() -> None:
        n = 20_000
        with path.open("a") as f:
            while not stop.is_set():
                f.write(line.format(n=n))
                f.flush()
                n += 1

    writer = threading.Thread(target=appender, daemon=True)
    writer.start()
    try:
        time.sleep(0.05)
        started = time.monotonic()
        result = cli(["summarize", "--file", str(path), "--no-history"])
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        writer.join(timeout=10)
    assert result.exit_code == 0, result.stderr
    assert elapsed < 30
    sent = fake_engine.calls[-1][-1]["content"]
    lines = [ln for ln in sent.splitlines() if ln.startswith("event number")]
    assert len(lines) >= 20_000
    assert lines == [line.format(n=n).rstrip("\n") for n in range(len(lines))]  # a prefix of what was written
    assert path.read_text().startswith("".join(ln + "\n" for ln in lines[:-1]))


def test_a_file_rewritten_while_translated_keeps_the_output_whole(cli, tmp_path, monkeypatch):
    """The source is replaced mid-translation: the output is the translation of what was read, whole."""
    from tests.test_translate import ScriptedTranslator

    source = tmp_path / "doc.md"
    paragraphs = [f"Paragraph number {n} says something." for n in range(12)]
    source.write_text("\n\n".join(paragraphs) + "\n")
    engine = ScriptedTranslator(transform=str.upper, delay=0.01, context_size=256)
    calls = {"n": 0}
    original = engine.stream

    def stream(messages, sampling):
        calls["n"] += 1
        if calls["n"] == 2:
            source.write_text("Something else entirely.\n")
        return original(messages, sampling)

    engine.stream = stream  # type: ignore[method-assign]
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    monkeypatch.setattr("gptcli.translate.checks.detect_language", lambda text: None)  # upper case is no French
    out = tmp_path / "doc.fr.md"
    result = cli(["translate", str(source), "--to", "fr", "-o", str(out), "--chunk-tokens", "16"])
    assert result.exit_code == 0, result.stderr
    assert calls["n"] > 2
    assert out.read_text() == ("\n\n".join(p.upper() for p in paragraphs) + "\n")


# ---------------------------------------------------------------- a single 10 MB line


@pytest.mark.parametrize("command", ["ask", "draft", "summarize"])
def test_a_10_mb_line_reaches_the_engine_whole(cli, fake_engine, tmp_path, command):
    path = tmp_path / "line.txt"
    path.write_text("word " * 2_000_000)
    started = time.monotonic()
    result = cli(COMMANDS[command](str(path)) + ["--no-history"])
    assert result.exit_code == 0, result.stderr
    assert time.monotonic() - started < 30
    assert len(fake_engine.calls[-1][-1]["content"]) >= 10_000_000 - 1


@pytest.mark.model
def test_a_10_mb_line_is_refused_by_the_real_model_at_once(run_gptcli, tmp_path):
    """Not minutes of tokenizing: the engine sees the text cannot fit and says so in about a second."""
    path = tmp_path / "line.txt"
    path.write_text("a" * 10_000_000)
    started = time.monotonic()
    proc = run_gptcli("ask", "what is this?", "--file", str(path), "--ctx", "512", "-n", "8", timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the input takes at least"), proc.stderr
    assert "context window holds 512" in lines[0]
    assert elapsed < 20, f"took {elapsed:.1f} s"
    assert proc.stdout == ""


# ---------------------------------------------------------------- standard input


def test_binary_and_invalid_utf8_on_stdin_are_one_error_line(gptcli_bin):
    """The same checks hold for piped input (bytes read, not a Python decode error)."""
    for data, needle in ((b"\x00\x01\x02binary\x00", "standard input looks like a binary file"),
                         ("café\n".encode("latin-1"), "standard input is not valid UTF-8")):
        proc = subprocess.run([gptcli_bin, "summarize", "--no-history"], input=data, capture_output=True, timeout=60)
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert err.startswith(f"error: {needle}") and len(err.strip().splitlines()) == 1
        assert proc.stdout == b""


def test_reading_never_imports_the_model_before_the_input_is_checked(tmp_path):
    """A bad file fails before llama.cpp is imported (fast, and nothing loaded for nothing)."""
    code = textwrap.dedent(
        f"""
        import sys
        from gptcli.cli import run
        code = run(["ask", "q", "--file", {str(tmp_path / "missing.txt")!r}])
        assert code == 1, code
        assert "llama_cpp" not in sys.modules, "llama_cpp imported"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    "line",
    [lambda: "a" * 10_000_000, lambda: "word " * 2_000_000, lambda: ("x" * 5000 + " ") * 2000],
    ids=["no-spaces", "words", "long-words"],
)
def test_a_10_mb_line_is_planned_for_translation_in_seconds(line):
    """Chunking a 10 MB line is linear: word splitting used to backtrack quadratically (hours for 10 MB)."""
    from gptcli.translate import Assembler, has_words, normalize_atom, plan_document

    text = line()
    started = time.monotonic()
    plan = plan_document(text, lambda t: len(t) // 4 + 1, 256, markdown=True)
    assert has_words(text)
    assert time.monotonic() - started < 30
    assert all(chunk.source_tokens <= 256 for chunk in plan.chunks)
    assembler = Assembler(plan)  # an identity translation gives the line back byte for byte
    for chunk in plan.chunks:
        assembler.add(chunk, [normalize_atom(atom, atom.text) for atom in chunk.atoms])
    assert assembler.drain() == text
