"""The README's examples run as written: every fenced ``console``/``sh``/``bash`` command that needs no network.

They run in README order, in one fresh user folder, as a newcomer would type them: the real
``gptcli`` command line, with a scripted engine in place of the model (fast), and the Quick start
and the Usage examples once more with the embedded model itself.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Examples left out, each for a reason a test cannot satisfy offline.
NOT_HERE = {
    "models pull": "downloads from the Hugging Face Hub",
    "pip install": "installs packages from PyPI",
    "python3 -m venv": "installation",
    "CMAKE_ARGS=": "rebuilds llama-cpp-python",
    "gptcli serve": "starts a server and waits for Ctrl-C",
    "--engine remote": "needs a running OpenAI-compatible server",
    "--base-url": "needs a running OpenAI-compatible server",
    "--engine gpu-box": "needs the profile's server",
    "--engine warm": "needs `gptcli serve` running",
    "export GPU_BOX_KEY": "a key for a server",
    "pbpaste": "macOS's clipboard",
    "gemma3": "assembles a 240 MB model from a package",
    "~/models/": "a model file of the reader's own",
    "smollm2-360m-instruct-q4_k_m": "a model pulled from the Hub",
    "bartowski/": "a model pulled from the Hub",
    "qwen2.5-1.5b": "a model pulled from the Hub",
    "--install-completion  ": "detects the reader's shell (the line below names one, and runs)",
    "pytest": "the test suite itself",
    "mypy": "development (the type checker runs in CI)",
    "benchmarks/run": "development",
    ".ci/run": "development",
    "completions/generate": "development",
    "docs/screenshot.py": "development",
}
# Examples whose documented exit status is not 0.
EXIT_CODES = {
    "gptcli history rm k3v9a1nh ": 1,  # "asks first": with no answer on stdin, nothing is deleted
}
SESSION_ID = "k3v9a1nh69jc"  # the id the README's history examples use


@dataclass(frozen=True)
class Example:
    line: int
    command: str


def readme_examples(text: str) -> list[Example]:
    """Commands of the fenced console/sh/bash blocks: ``$ ``-lines of a console block, every
    non-comment line of a shell block (a trailing ``\\`` joins the next line)."""
    examples: list[Example] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(console|sh|bash)\s*$", lines[i])
        i += 1
        if not fence:
            continue
        console = fence.group(1) == "console"
        while i < len(lines) and not lines[i].startswith("```"):
            start, line = i + 1, lines[i]
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + lines[i]
            i += 1
            if console:
                if line.startswith("$ "):
                    examples.append(Example(start, line[2:].strip()))
            elif line.strip() and not line.lstrip().startswith("#"):
                examples.append(Example(start, line.strip()))
        i += 1
    return examples


def left_out(example: Example) -> str | None:
    for needle, reason in NOT_HERE.items():
        if needle in example.command:
            return reason
    if example.command.startswith("sqlite3 ") and shutil.which("sqlite3") is None:
        return "the sqlite3 command-line tool is not installed"
    return None


WRAPPER = """\
#!{python}
import sys
sys.path.insert(0, {root!r})
from gptcli.engines import choose
from tests.fakes import FakeEngine
from tests.test_translate import ScriptedTranslator



def instance(schema):
    # a small value that follows a JSON Schema (what a model constrained by it would write)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object" or "properties" in schema:
        return {{key: instance(sub) for key, sub in schema.get("properties", {{}}).items()}}
    if kind == "array":
        return [instance(schema.get("items", {{"type": "string"}}))] * max(1, schema.get("minItems", 1))
    return {{"integer": 1, "number": 1.5, "boolean": True, "null": None}}.get(kind, "text")


class SchemaAware(FakeEngine):
    # replies with JSON that follows the request's schema, when it has one

    def stream(self, messages, sampling):
        if sampling.json_schema is not None:
            import json

            self.replies = [json.dumps(instance(sampling.json_schema))]
        return super().stream(messages, sampling)


if "translate" in sys.argv[1:]:
    import gptcli.translate.checks

    engine = ScriptedTranslator(transform=str.upper)
    gptcli.translate.checks.detect_language = lambda text: None  # upper case is no French
else:
    engine = SchemaAware(replies=["A short reply from the scripted engine.", "And another one."])
choose.open_engine = lambda settings: engine
from gptcli.cli import main
main()
"""


def material(folder: Path) -> None:
    """The files the examples read, in the folder they run in."""
    notes = "Meeting notes, Monday:\n- the release moves to May 3\n- Ana leads QA\n- the budget is approved\n"
    for name in ("notes.txt", "meeting.txt", "para.txt", "letter.txt", "customer-email.txt"):
        (folder / name).write_text(notes)
    (folder / "notes").mkdir()
    (folder / "notes" / "monday.md").write_text(notes)
    doc = "# Manual\n\nInstall the lamp. Then switch it on.\n\n- Press the button.\n- Wait.\n"
    for name in ("manual.md", "README.md", "book.md"):
        (folder / name).write_text(doc)
    (folder / "docs").mkdir()
    (folder / "docs" / "intro.md").write_text(doc)
    (folder / "docs" / "setup.md").write_text(doc)
    (folder / "faq.md").write_text("# Acme Help Centre\n\n## Refunds\n\nRefunds take 14 days.\n\n## Returns\n\nReturn within 30 days.\n")
    (folder / "manual").mkdir()
    (folder / "manual" / "lamp.md").write_text(doc)
    (folder / "terms.csv").write_text("term,translation\nlamp,lampe\n")
    (folder / "completions").symlink_to(ROOT / "completions")
    # structured output's examples
    (folder / "article.txt").write_text("Ana Lima met Tom Berg in Oslo on Monday.\n")
    (folder / "email.txt").write_text("Hello, my order 1234 arrived broken. Please send a new one. Ana\n")
    (folder / "emails.txt").write_text("My order 1234 arrived broken.\nWhere is my refund?\nThe app crashes at login.\n")
    (folder / "lines.txt").write_text("The blue kettle costs 39 euros.\nA toaster for 25.50.\n")
    (folder / "records.jsonl").write_text('{"input": "My order 1234 arrived broken."}\n{"input": "Where is my refund?"}\n')
    (folder / "person.json").write_text('{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}\n')
    (folder / "yesno.gbnf").write_text('root ::= "yes" | "no"\n')


def seed_history(env: dict[str, str]) -> None:
    """The conversations the README's history examples name: "trip planning" (with the README's id),
    "garden", and ones that `history search "docker compose"` and `"pian*"` find."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import gptcli.store as store
        from gptcli.engines import Usage
        ids = iter([{SESSION_ID!r}, None, None, None])
        original = store.new_session_id
        store.new_session_id = lambda now=None: next(ids) or original(now)
        with store.ConversationStore.open() as history:
            for title, question, answer in [
                ("trip planning", "Plan three days in Paris", "Day 1: the Louvre."),
                ("garden", "When do I plant tulips?", "In autumn."),
                ("docker", "How do I start docker compose?", "Run docker compose up."),
                ("music", "Should I take piano lessons?", "Yes, piano is fun."),
            ]:
                history.save_exchange(question, answer, Usage(), False, model="fake", template="ask", system=None, title=title)
    """)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def run_examples(tmp_path: Path, engine: str) -> tuple[list[tuple[Example, subprocess.CompletedProcess[str], int]], list[Example]]:
    work = tmp_path / "work"
    home = tmp_path / "home"
    bin_dir = tmp_path / "bin"
    for folder in (work, home, bin_dir, home / ".config" / "fish" / "completions"):
        folder.mkdir(parents=True)
    material(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPTCLI_") and k not in ("VISUAL", "NO_COLOR", "FORCE_COLOR")}
    env.update(HOME=str(home), GPTCLI_HOME=str(tmp_path / "gptcli-home"), HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1",
               EDITOR="true", COLUMNS="100", PYTHONDONTWRITEBYTECODE="1")
    if engine == "scripted":
        wrapper = bin_dir / "gptcli"
        wrapper.write_text(WRAPPER.format(python=sys.executable, root=str(ROOT)))
        wrapper.chmod(0o755)
    else:  # the installed command and the embedded model, with short replies
        shutil.copy(Path(sys.executable).parent / "gptcli", bin_dir / "gptcli")
        env.update(GPTCLI_MAX_TOKENS="24", GPTCLI_CTX="1024")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    seed_history(env)
    ran, skipped = [], []
    for example in readme_examples(README.read_text(encoding="utf-8")):
        if left_out(example):
            skipped.append(example)
            continue
        proc = subprocess.run(["bash", "-c", example.command], cwd=work, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=300)
        expected = next((code for needle, code in EXIT_CODES.items() if example.command.startswith(needle)), 0)
        ran.append((example, proc, expected))
    return ran, skipped


def failures(ran: list[tuple[Example, subprocess.CompletedProcess[str], int]]) -> list[str]:
    return [
        f"README.md:{example.line}: `{example.command}` exited {proc.returncode} (expected {expected}): {proc.stderr.strip()[-400:]}"
        for example, proc, expected in ran
        if proc.returncode != expected or "Traceback" in proc.stderr
    ]


def test_the_examples_are_found_and_only_offline_ones_are_left_out():
    examples = readme_examples(README.read_text(encoding="utf-8"))
    assert len(examples) > 100
    kept = [e for e in examples if not left_out(e)]
    assert len(kept) > 75
    # every quick-start command that needs no network is among them
    assert any(e.command.startswith('gptcli ask "What is a GGUF file?"') for e in kept)


def test_every_readme_example_runs_as_written_against_a_scripted_engine(tmp_path):
    ran, skipped = run_examples(tmp_path, "scripted")
    assert len(ran) > 75
    assert failures(ran) == []
    # and they did what they say: files written, history kept
    work = tmp_path / "work"
    assert (work / "trip.md").read_text().startswith("# trip planning")
    assert (work / "manual.de.md").read_text().startswith("# MANUAL")
    assert sorted(p.name for p in (work / "docs" / "de").iterdir()) == ["intro.md", "setup.md"]
    db = sqlite3.connect(tmp_path / "gptcli-home" / "history.db")
    try:
        titles = {row[0] for row in db.execute("SELECT title FROM sessions")}
    finally:
        db.close()
    assert {"trip planning", "What is a GGUF file?"} <= titles


@pytest.mark.model
def test_the_quick_start_and_usage_examples_run_with_the_embedded_model(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    usage = text[text.index("## Quick start"):text.index("### Replies that repeat themselves")]
    monkeypatch.setattr(sys.modules[__name__], "README", tmp_path / "README-part.md")
    (tmp_path / "README-part.md").write_text(usage)
    ran, _ = run_examples(tmp_path, "embedded")
    assert len(ran) >= 7
    assert failures(ran) == []
    answered = [proc for example, proc, _ in ran if example.command.startswith("gptcli ask")]
    assert answered and all(proc.stdout.strip() for proc in answered)


def test_the_recommended_models_table_is_the_registrys():
    from gptcli.models import RECOMMENDED

    text = README.read_text(encoding="utf-8")
    for model in RECOMMENDED:
        row = f"| {model.memory} | `{model.name}` | `{model.repo}` | {model.download} | {model.note} |"
        assert row in text, row


def test_the_serve_banner_in_the_readme_shows_the_context_serve_uses():
    from gptcli.engines.local import default_context
    from gptcli.ggufinfo import read_gguf
    from gptcli.models import embedded_model_path

    n_ctx = default_context(read_gguf(embedded_model_path(), tensors=False), None)
    text = README.read_text(encoding="utf-8")
    assert f"Serving smollm2-135m at http://127.0.0.1:8080/v1 (context {n_ctx} tokens; Ctrl-C stops it)" in text
    assert f"context_length = {n_ctx}" in text


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_every_link_inside_the_readme_and_to_docs_leads_somewhere():
    text = README.read_text(encoding="utf-8")
    anchors = {github_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", text, flags=re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) > 20
    assert sorted({link for link in links if link not in anchors}) == []
    for path, anchor in re.findall(r"\]\(((?:docs|benchmarks)/[^)#]+)(?:#([^)]+))?\)", text):
        target = ROOT / path
        assert target.is_file(), path
        if anchor:
            headings = {github_anchor(h) for h in re.findall(r"^#{1,4} (.+)$", target.read_text(encoding="utf-8"), flags=re.M)}
            assert anchor in headings, f"{path}#{anchor}"


def test_the_files_table_gives_the_modes_gptcli_makes(tmp_path):
    """Files gptcli keeps: a chat, an ask -c (saves a model state), a translation, models add, config set, templates new."""
    home = tmp_path / "gptcli-home"
    wrapper_env = {**os.environ, "GPTCLI_HOME": str(home), "HF_HUB_OFFLINE": "1", "EDITOR": "true"}
    wrapper_env.pop("GPTCLI_CONFIG", None)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gptcli").write_text(WRAPPER.format(python=sys.executable, root=str(ROOT)))
    (bin_dir / "gptcli").chmod(0o755)
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nSome text.\n")
    from gptcli.models import embedded_model_path

    for command in (["ask", "hello"], ["translate", str(doc), "--to", "fr"], ["models", "add", str(embedded_model_path()), "--alias", "e"],
                    ["config", "set", "top_k", "30"], ["templates", "new", "mine", "--no-edit"]):
        proc = subprocess.run([str(bin_dir / "gptcli"), *command], env=wrapper_env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (command, proc.stderr)
    mode = lambda path: oct(path.stat().st_mode & 0o777)  # noqa: E731
    text = README.read_text(encoding="utf-8")
    assert mode(home) == "0o700" and mode(home / "history.db") == "0o600"
    assert "| `history.db` | data | 0600 |" in text
    assert mode(home / "translations") == "0o700" and {mode(p) for p in (home / "translations").iterdir()} == {"0o600"}
    assert "| `translations/` | data | 0700, files 0600 |" in text
    assert mode(home / "models.json") == "0o600" and "| `models.json` | data | 0600 |" in text
    assert mode(home / "config.toml") == "0o600" and "| `config.toml` | config | 0600 |" in text
    assert mode(home / "templates") == "0o700"
