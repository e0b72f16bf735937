"""gptcli translate end to end: the installed executable, the real embedded model, a small context."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.fakes import RecordingEngine

pytestmark = pytest.mark.model

LONG = " ".join(
    f"Step {i} of the setup copies the files, checks the disk space and writes a short report." for i in range(1, 13)
)
SOURCE = (
    "# Installation guide\r\n"
    "\r\n"
    f"{LONG}\r\n"
    "\r\n"
    "## Steps\r\n"
    "\r\n"
    "- Download the archive from the website\r\n"
    "- Unpack it into a folder\r\n"
    "- Run the installer\r\n"
    "\r\n"
    "| Setting | Value |\r\n"
    "| --- | --- |\r\n"
    "| Language | English |\r\n"
    "| Port | 8080 |\r\n"
    "\r\n"
    "```bash\r\n"
    "./install.sh --prefix /opt/app\r\n"
    "```\r\n"
    "\r\n"
    "## Support\r\n"
    "\r\n"
    "Write to us if something goes wrong."  # no final newline
)
FAST = ["--ctx", "512", "-n", "12", "--temperature", "0", "--seed", "1"]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "guide.md"
    path.write_bytes(SOURCE.encode())
    return path


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def skeleton(text: str) -> list[str]:
    """What structure a line has: blank, heading level, list marker, table pipes, or text."""
    kinds = []
    for line in text.split("\r\n"):
        if not line:
            kinds.append("blank")
        elif line.startswith("#"):
            kinds.append(line.split(" ")[0])
        elif line.startswith("- "):
            kinds.append("item")
        elif line.startswith("|"):
            kinds.append("row" + str(line.count("|")))
        else:
            kinds.append("text")
    return kinds


def test_markdown_keeps_structure_code_line_endings_and_order(run_gptcli, source, tmp_path):
    out = tmp_path / "guide.fr.md"
    proc = run_gptcli("translate", str(source), "--to", "fr", "-o", str(out), "--json", "--parallel", "4", *FAST)
    assert proc.returncode == 0, proc.stderr
    # the demo model is named once; a closing notice may say how much of the document is trusted
    assert all(line.startswith((DEMO_NOTE, "warning: ")) or "are not translations" in line for line in proc.stderr.splitlines())
    log = events(proc.stdout)
    start, chunks, done = log[0], [e for e in log if e["type"] == "chunk"], log[-1]
    assert start["type"] == "start" and done["type"] == "done"
    assert start["chunks"] >= 5, "a 512-token context should need many chunks"
    # each chunk once (events come as chunks finish, four at a time here; the file is in order)
    assert sorted(c["index"] for c in chunks) == list(range(start["chunks"]))
    assert all(c["translations"] and all(t.strip() for t in c["translations"]) for c in chunks)

    data = out.read_bytes()
    text = data.decode("utf-8")
    assert "\n" not in text.replace("\r\n", "")  # CRLF stays CRLF
    assert not text.endswith("\n")  # no final newline, as in the source
    assert skeleton(text) == skeleton(SOURCE)
    assert "\r\n| --- | --- |\r\n" in text and "| 8080 |" in text
    assert "```bash\r\n./install.sh --prefix /opt/app\r\n```\r\n" in text  # code byte for byte
    assert text != SOURCE


def test_a_paragraph_the_model_loops_on_is_cut_where_it_repeats(run_gptcli, tmp_path):
    # SmolLM2 at temperature 0 ends its "translation" of this paragraph with "de la gestion" again
    # and again up to the length limit; the reply is stopped where the repetition starts
    src = tmp_path / "models.md"
    src.write_text(
        "Which model runs: `--model` > `GPTCLI_MODEL` > `model` in the config file > the embedded SmolLM2.\n"
        "`gptcli COMMAND --help` lists every option with an example.\n"
    )
    proc = run_gptcli("translate", str(src), "--to", "fr", "--json", "--ctx", "1024", "--temperature", "0", "--seed", "1", "-P", "1")
    assert proc.returncode == 0, proc.stderr
    done = events(proc.stdout)[-1]
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n", done["text"]) if len(s.strip()) >= 16]
    assert len(sentences) == len(set(sentences)), done["text"]  # no sentence twice
    # (a reply that failed a check is sent again, warmer: whether that one loops or runs on to its
    # limit varies, so only what the document gets is asserted here; tests/test_translate.py
    # proves the cut with scripted loops)


def _run_until_chunks(cmd: list[str], chunks: int, sig: int) -> tuple[int, list[dict], str]:
    """Start the translation, send ``sig`` after ``chunks`` chunk events, return (code, events, stderr)."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[dict] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        seen.append(json.loads(line))
        if sum(e["type"] == "chunk" for e in seen) == chunks:
            os.kill(proc.pid, sig)
            break
    proc.stdout.read()
    code = proc.wait(timeout=60)
    return code, seen, proc.stderr.read() if proc.stderr else ""


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)], ids=["ctrl-c", "crash"])
def test_a_stopped_translation_resumes_with_only_the_rest(run_gptcli, gptcli_bin, source, tmp_path, sig, code):
    out = tmp_path / "guide.fr.md"
    cmd = [gptcli_bin, "translate", str(source), "--to", "de", "-o", str(out), "--json", *FAST]
    returncode, seen, stderr = _run_until_chunks(cmd, 2, sig)
    assert returncode == code, stderr
    total = seen[0]["chunks"]
    assert not out.exists(), "a stopped translation must not leave a partial output"
    if sig == signal.SIGINT:
        assert "run the same command again" in " ".join(stderr.split())
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    proc = run_gptcli("translate", str(source), "--to", "de", "-o", str(out), "--json", "--resume", *FAST)
    assert proc.returncode == 0, proc.stderr
    log = events(proc.stdout)
    assert log[0]["cached"] >= 2
    fresh = [e for e in log if e["type"] == "chunk" and not e["cached"]]
    assert len(fresh) == total - log[0]["cached"]
    assert log[-1]["cached"] == log[0]["cached"] and log[-1]["chunks"] == total
    assert skeleton(out.read_bytes().decode()) == skeleton(SOURCE)


def test_inline_code_links_and_urls_come_back_as_they_were_whatever_the_model_does(run_gptcli, tmp_path):
    # the model is sent placeholders for them: each one it keeps comes back byte for byte, no
    # placeholder shows in the translation, and a piece whose reply lost one (twice) keeps its
    # source, counted: every span of the source is in the document
    pieces = [
        ("Run `gptcli chat --resume` to go on where you stopped.", ["`gptcli chat --resume`"]),
        ("The guide is at https://example.com/docs/guide.html and in [the FAQ](docs/faq.md).", ["https://example.com/docs/guide.html", "docs/faq.md"]),
        ("- Set `GPTCLI_HOME` to move the data folder", ["`GPTCLI_HOME`"]),
    ]
    src = tmp_path / "spans.md"
    src.write_text("\n\n".join(text for text, _ in pieces) + "\n")
    proc = run_gptcli("translate", str(src), "--to", "fr", "--json", "--ctx", "1024", "--temperature", "0", "--seed", "1", "-P", "1")
    assert proc.returncode == 0, proc.stderr
    done = events(proc.stdout)[-1]
    out = done["text"].split("\n\n")
    assert len(out) == len(pieces), done["text"]
    assert not re.search(r"\{\s*\d+\s*\}", done["text"])
    assert all(span in text for text, (_, spans) in zip(out, pieces) for span in spans), done["text"]  # whole, as they were
    kept = sum(text.strip() == source for text, (source, _) in zip(out, pieces))
    assert done["spans_lost"] <= done["kept_source"] == kept


def test_stdin_to_stdout_on_a_pipe(run_gptcli):
    proc = run_gptcli("translate", "--to", "Spanish", *FAST, input="Good morning.\n\nThe shop opens at 9.\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\n") and proc.stdout.count("\n\n") == 1
    assert "\x1b" not in proc.stdout and "error" not in proc.stderr


def test_binary_input_is_a_one_line_error(run_gptcli, tmp_path):
    path = tmp_path / "photo.md"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00")
    proc = run_gptcli("translate", str(path), "--to", "fr")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "binary" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


NUMBERED = (
    "# 1 User guide\n\n"
    "## 1.2 Daily use\n\n"
    "Open the app every morning and read the 3 new messages in your inbox.\n\n"
    "```python\nprint('hello')\n```\n\n"
    "## 1.3 Settings\n\n"
    "The settings page has 12 options; change them with care and save your work.\n\n"
    "- Keep 2 copies of your data on another disk\n"
    "- Check the 5 newest logs every week\n"
)
DEMO_NOTE = "note: smollm2-135m is a 135M demo model and cannot really translate"


def _headings(text: str) -> list[str]:
    """Each heading's marker and section number: "## 1.2"."""
    return [" ".join(line.split(" ")[:2]) for line in text.split("\n") if line.startswith("#")]


@pytest.mark.parametrize("lang", ["fr", "zh"])
def test_no_output_has_an_unbalanced_fence_or_a_changed_heading_number_and_the_demo_model_says_so(run_gptcli, tmp_path, lang):
    src = tmp_path / "numbered.md"
    src.write_text(NUMBERED)
    proc = run_gptcli("translate", str(src), "--to", lang, "--json", *FAST)
    assert proc.returncode == 0, proc.stderr
    done = events(proc.stdout)[-1]
    text = done["text"]
    assert text.count("```") == 2 and "```python\nprint('hello')\n```\n" in text
    assert _headings(text) == ["# 1", "## 1.2", "## 1.3"]
    assert len(text.split("\n")) == len(NUMBERED.split("\n"))  # no line added or lost
    assert done["pieces"] == 7 and set(done["checks"]) == {"language", "length", "structure", "numbers", "spans"}
    assert done["trusted"] == round((done["pieces"] - done["kept_source"]) / done["pieces"], 4)
    assert proc.stderr.count(DEMO_NOTE) == 1  # said once, and what to pull instead
    assert "`gptcli models pull qwen2.5-1.5b` (1.1 GB, multilingual) and --model qwen2.5-1.5b" in proc.stderr


def test_strict_fails_on_a_document_the_model_could_not_translate(run_gptcli, tmp_path):
    src = tmp_path / "numbered.md"
    src.write_text(NUMBERED)
    out = tmp_path / "numbered.zh.md"
    proc = run_gptcli("translate", str(src), "--to", "zh", "--strict", "-o", str(out), *FAST)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"error: {src}: under 80% of the pieces passed the checks (--strict); the output was written"
    assert "of the pieces of" in proc.stderr and "are not translations" in proc.stderr
    assert out.read_text().count("```") == 2  # written, and whole


def test_a_piece_sent_again_reads_its_prompt_from_the_kv_cache():
    """A chunk's failed piece is sent again right after its first reply (not after the chunk's
    other pieces): the engine reuses the whole prompt from its KV cache, so the retry costs one
    evaluated prompt token, not the piece again."""
    from gptcli.engines import Sampling
    from gptcli.engines.local import load_local_engine
    from gptcli.languages import resolve_language
    from gptcli.models import embedded_model_path
    from gptcli.templates import load_template
    from gptcli.translate import Glossary, Job, Translator
    from gptcli.translate.checks import Checker

    class FirstReplyFails(Checker):  # each piece's first reply is judged a failure, its retry is not
        def __init__(self, target: str, source: str) -> None:
            super().__init__(target, source)
            self.seen: set[str] = set()

        def failed(self, source: str, reply: str) -> tuple[str, ...]:
            first = source not in self.seen
            self.seen.add(source)
            return ("language",) if first else ()

    engine = RecordingEngine(load_local_engine(embedded_model_path(), ctx=512))
    job = Job(
        target=resolve_language("fr"), source=resolve_language("en"), template=load_template("translate"),
        values={"target": "French", "source": "English"}, glossary=Glossary(),
        sampling=Sampling(temperature=0.0, seed=1), model="test", max_tokens=12,
    )
    translator = Translator(engine, job, checker=FirstReplyFails("fr", "en"))
    text = (
        "The server keeps every message of each conversation for a month.\n\n"
        "The guide lists each setting and what it changes in the program.\n\n"
        "Backups run at night and copy the whole folder to another disk.\n"
    )
    plan = translator.plan(text, markdown=True, chunk_tokens=96)
    assert [len(chunk.atoms) for chunk in plan.chunks] == [3]
    translator.packed_failed = 2  # as after two whole chunks came back broken: this one goes piece by piece
    summary = translator.run(plan, lambda part: None)
    assert (summary.pieces, summary.retried, summary.trusted_share) == (3, 3, 1.0)
    assert len(engine.usages) == 6
    for first, retry in zip(engine.usages[::2], engine.usages[1::2]):
        assert first.prompt_tokens - first.cached_tokens >= 5  # the piece itself was read
        assert retry.prompt_tokens == first.prompt_tokens and retry.cached_tokens == retry.prompt_tokens - 1
