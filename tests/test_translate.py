"""gptcli translate on scripted engines: structure kept, chunking, resume, glossary, parallel, bad inputs."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gptcli.engines import Chunk, Message, Sampling, Usage
from gptcli.languages import resolve_language
from gptcli.errors import UsageError
from gptcli.translate import (
    Assembler,
    Unit,
    Verbatim,
    could_match,
    echoes_prompt,
    load_glossary,
    parse_document,
    plan_document,
    split_long_text,
)

DOC = """---
title: Manual
tags: [a, b]
---

# Getting started

Install the package with `pip install gptcli`. Then run the command
below to check that it works. See https://example.com/docs for details.

## Options

- `--model` chooses the model
- `--seed` fixes the random seed
  so replies repeat
1. First step
2) Second step

| Option | Meaning | Default |
| ------ | ------- | ------- |
| ctx | The context window | 4096 |
| seed | The seed | 42 |

```python
def hello():
    # Say hello
    print("hello world")
```

> A quoted remark
> on two lines

    indented code stays

### The end

Thanks for reading.
"""


def user_text(messages: Sequence[Message]) -> str:
    """The text a translation request carries (after the template's instruction line)."""
    content = messages[-1]["content"]
    return content.split("\n\n", 1)[1] if content.startswith("Translate into") else content


@dataclass
class ScriptedTranslator:
    """An engine that 'translates' with a function; counts calls, honours stop strings, may be slow."""

    transform: Callable[[str], str] = lambda text: text
    context_size: int = 4096
    model_name: str = "scripted"
    delay: float = 0.0
    interrupt_after: int | None = None  # raise KeyboardInterrupt on this call (Ctrl-C)
    calls: list[list[Message]] = field(default_factory=list)
    samplings: list[Sampling] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    word_by_word: bool = False  # stream each reply a word at a time, the space before it, as models do
    pieces_sent: int = 0  # pieces of replies actually read by the translator
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def context_length(self) -> int:
        return self.context_size

    def tokenize_count(self, text: str) -> int:
        return len(text.split()) + text.count("\n")

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.tokenize_count(m["content"]) + 4 for m in messages)

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        with self.lock:
            self.calls.append([dict(m) for m in messages])  # type: ignore[misc]
            self.samplings.append(sampling)
            number = len(self.calls)
        if self.interrupt_after is not None and number > self.interrupt_after:
            raise KeyboardInterrupt
        return self._reply(messages, sampling)

    def _reply(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            text = self.transform(user_text(messages))
            for stop in sampling.stop:
                if stop in text:
                    text = text[: text.index(stop)]
            usage = Usage(prompt_tokens=self.count_tokens(messages), completion_tokens=self.tokenize_count(text))
            for piece in re.findall(r"\s*\S+|\s+$", text) if self.word_by_word else [text]:
                with self.lock:
                    self.pieces_sent += 1
                yield Chunk(piece, None)
            yield Chunk("", usage)
        finally:
            with self.lock:
                self.in_flight -= 1

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        raise NotImplementedError


@dataclass
class ConcurrentScripted(ScriptedTranslator):
    """A scripted engine that is ``Concurrent`` (its requests are queued at once), as the batched local one is."""

    def wake(self) -> None:
        pass

    def pump(self, wait: float) -> bool:
        return False

    def close(self) -> None:
        pass


def upper_keeping_code(text: str) -> str:
    """A 'translation' that changes words but keeps inline code and URLs, like a good model."""
    protected = re.compile(r"`[^`]*`|https?://\S+")
    out, pos = [], 0
    for match in protected.finditer(text):
        out.append(text[pos : match.start()].upper())
        out.append(match.group(0))
        pos = match.end()
    out.append(text[pos:].upper())
    return "".join(out)


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> ScriptedTranslator:
    scripted = ScriptedTranslator()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: scripted)
    # these engines 'translate' English into English (or upper case): the document's language is
    # left unknown, so the language check passes them; tests/test_translate_checks.py tests it
    monkeypatch.setattr("gptcli.translate.checks.detect_language", lambda text: None)
    return scripted


@pytest.fixture
def doc(tmp_path: Path) -> Path:
    path = tmp_path / "manual.md"
    path.write_text(DOC, encoding="utf-8")
    return path


# ---------------------------------------------------------------- structure


def test_identity_translation_gives_back_the_document_byte_for_byte(cli, engine, doc, tmp_path):
    out = tmp_path / "out.md"
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == doc.read_bytes()
    assert "warning" not in result.stderr


def test_inline_code_links_and_urls_come_back_byte_for_byte_whatever_the_model_does_to_words(cli, engine, tmp_path):
    # the model is sent placeholders for them, so one that 'translates' everything (upper case
    # here, code and URLs included) cannot touch them; the same span is the same placeholder
    engine.transform = str.upper
    src = tmp_path / "doc.md"
    src.write_text(
        "See [the guide](docs/guide.md) or <https://example.com/a_b> first.\n\n"
        "- Run `ls -l` to list files, then `ls` again\n- Keep `ls -l` and https://example.com/x.\n\n"
        "| Flag | Meaning |\n| --- | --- |\n| `--to` | the `target` language |\n"
    )
    result = cli(["translate", str(src), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["text"] == (
        "SEE [THE GUIDE](docs/guide.md) OR <https://example.com/a_b> FIRST.\n\n"
        "- RUN `ls -l` TO LIST FILES, THEN `ls` AGAIN\n- KEEP `ls -l` AND https://example.com/x.\n\n"
        "| FLAG | MEANING |\n| --- | --- |\n| `--to` | THE `target` LANGUAGE |\n"
    )
    assert done["spans_lost"] == 0
    sent = "\n".join(user_text(call) for call in engine.calls)
    assert "See [the guide]({1}) or <{2}> first." in sent
    assert "- Run {3} to list files, then {4} again\n- Keep {3} and {5}." in sent
    assert "| the {6} language |" in sent  # a cell of code alone is not translated: it goes as context
    assert "`ls" not in sent and "example.com" not in sent


def test_the_live_preview_shows_spans_not_placeholders_even_split_across_tokens():
    from gptcli.translate import RestoringEvents

    class Seen:
        def __init__(self) -> None:
            self.text = ""

        def attempt(self, index: int) -> None:
            self.text = ""

        def token(self, index: int, text: str) -> None:
            self.text += text

    seen = Seen()
    events = RestoringEvents(seen, ["`ls -l`", "https://example.com"])  # type: ignore[arg-type]
    for token in ["Lancez", " {", "1", "}", " puis", " {2", " }", " et {", "3}", " {"]:
        events.token(0, token)
    # a made-up {3} goes; the last "{" is held: it may begin one
    assert seen.text == "Lancez `ls -l` puis https://example.com et  "
    events.attempt(0)
    events.token(0, "x")
    assert seen.text == "x"


def test_text_that_looks_like_a_placeholder_is_sent_as_it_is(cli, engine, tmp_path):
    engine.transform = str.upper
    src = tmp_path / "doc.md"
    src.write_text("Write {1} where `name` goes.\n\n# Formats\n\nUse `'{0}'.format(x)` here.\n")
    result = cli(["translate", str(src), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    # the first chunk's code went as it was, and this model changed it: that piece keeps its
    # source (a changed code span is no translation); in code, '{0}' is no matter
    assert result.stdout == "Write {1} where `name` goes.\n\n# FORMATS\n\nUSE `'{0}'.format(x)` HERE.\n"


def test_a_piece_whose_reply_lost_or_mangled_a_placeholder_is_sent_again_then_kept_as_its_source(cli, engine, tmp_path):
    # a model that drops a link target or mangles a placeholder would break the document ("See
    # [the guide](#2)"): such a piece goes once more, alone, and if its reply is no better it
    # keeps its source text, counted; the pieces that came back whole are translated
    engine.transform = lambda text: text.replace("({1})", "(#2)").replace(" {2}", "").upper()
    src = tmp_path / "doc.md"
    src.write_text("See [the guide](docs/guide.md) first.\n\n- Run `ls` and `pwd`\n- Keep `pwd` and https://example.com/x.\n")
    result = cli(["translate", str(src), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["text"] == "See [the guide](docs/guide.md) first.\n\n- Run `ls` and `pwd`\n- KEEP `pwd` AND https://example.com/x.\n"
    assert (done["spans_lost"], done["kept_source"], done["retried"], done["pieces"]) == (2, 2, 2, 3)
    assert done["checks"]["spans"] == 1 and done["trusted"] == pytest.approx(1 / 3, abs=1e-3)
    assert "#2" not in done["text"]
    plain = cli(["translate", str(src), "--to", "fr", "--no-resume"])
    assert "warning: 2 of 3 pieces were kept in the source language: their replies failed the checks twice (numbers 1, spans 2)" in plain.stderr


def test_translation_keeps_structure_code_and_front_matter(cli, engine, doc):
    engine.transform = upper_keeping_code
    result = cli(["translate", str(doc), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("---\ntitle: Manual\ntags: [a, b]\n---\n\n# GETTING STARTED\n")
    assert "\n## OPTIONS\n" in out and "\n### THE END\n" in out
    assert "- `--model` CHOOSES THE MODEL\n- `--seed` FIXES THE RANDOM SEED\n  SO REPLIES REPEAT\n" in out
    assert "1. FIRST STEP\n2) SECOND STEP\n" in out
    assert "| OPTION | MEANING | DEFAULT |\n| ------ | ------- | ------- |\n| CTX | THE CONTEXT WINDOW | 4096 |\n" in out
    assert '```python\ndef hello():\n    # Say hello\n    print("hello world")\n```\n' in out
    assert "> A QUOTED REMARK\n> ON TWO LINES\n" in out
    assert "\n    indented code stays\n" in out
    assert "https://example.com/docs" in out and "`pip install gptcli`" in out
    assert out.endswith("THANKS FOR READING.\n")
    sent = "".join(m[-1]["content"] for m in engine.calls)
    assert "print(" not in sent and "title: Manual" not in sent and "indented code" not in sent


def test_crlf_and_missing_final_newline_survive(cli, engine, tmp_path):
    engine.transform = str.upper
    src = tmp_path / "notes.md"
    src.write_bytes(b"# Title\r\n\r\nFirst line\r\nsecond line.\r\n\r\n- item one\r\n- item two\r\n\r\n```\r\ncode\r\n```\r\nLast words")
    out = tmp_path / "notes.fr.md"
    result = cli(["translate", str(src), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    data = out.read_bytes()
    assert data == b"# TITLE\r\n\r\nFIRST LINE\r\nSECOND LINE.\r\n\r\n- ITEM ONE\r\n- ITEM TWO\r\n\r\n```\r\ncode\r\n```\r\nLAST WORDS"


def test_a_model_that_rewraps_lines_keeps_the_markers_in_place(cli, engine, tmp_path):
    src = tmp_path / "list.md"
    src.write_text("- first item\n  goes on\n- second item\n\n> quoted\n> text\n")
    engine.transform = lambda text: "ONE LINE ONLY" if "\n" not in text else "A\nB\nC"
    result = cli(["translate", str(src), "--to", "de"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "- ONE LINE ONLY" or lines[0].startswith("- ")
    assert result.stdout.count("- ") == 2
    assert all(line.startswith("> ") for line in lines if line and not line.startswith(("-", " ")))


def test_bare_pieces_lose_markers_and_runaway_lines_the_model_adds(cli, engine, tmp_path):
    src = tmp_path / "h.md"
    src.write_text("## Heading\n")
    engine.transform = lambda text: "## Titre\nAnd then some commentary nobody asked for."
    result = cli(["translate", str(src), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "## Titre\n"


def test_plain_text_is_split_by_paragraphs(cli, engine, tmp_path):
    engine.transform = str.upper
    src = tmp_path / "letter.txt"
    src.write_text("# not a heading in text\n\nDear Ann,\nthanks.\n\n    indented line is text\n")
    result = cli(["translate", str(src), "--to", "es"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "# NOT A HEADING IN TEXT\n\nDEAR ANN,\nTHANKS.\n\n    INDENTED LINE IS TEXT\n"


# ---------------------------------------------------------------- chunks


def test_one_trip_per_chunk_when_the_model_keeps_the_structure(cli, engine, doc):
    engine.transform = upper_keeping_code
    result = cli(["translate", str(doc), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    start, done = events[0], events[-1]
    chunks = [e for e in events if e["type"] == "chunk"]
    assert start["type"] == "start" and done["type"] == "done"
    assert [c["index"] for c in chunks] == list(range(start["chunks"]))
    assert len(engine.calls) == start["chunks"] == done["chunks"]
    assert done["packed"] >= 1 and done["fell_back"] == 0
    assert done["text"].startswith("---\ntitle: Manual")


def test_a_model_that_breaks_packed_chunks_is_asked_piece_by_piece(cli, engine, doc):
    engine.transform = lambda text: " ".join(text.split()).upper()  # everything on one line
    result = cli(["translate", str(doc), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["fell_back"] == 2 and done["packed"] == 0  # after two failures it stops trying whole chunks
    assert "\n## OPTIONS\n" in done["text"]
    assert "| CTX | THE CONTEXT WINDOW | 4096 |" in done["text"]


def test_a_smaller_context_makes_more_chunks_and_every_prompt_fits(cli, engine, doc):
    counts = {}
    for ctx, limit in ((4096, []), (256, []), (256, ["--chunk-tokens", "12"])):
        engine.calls.clear()
        engine.samplings.clear()
        engine.context_size = ctx
        result = cli(["translate", str(doc), "--to", "fr", "--json", "--no-resume", *limit])
        assert result.exit_code == 0, result.stderr
        counts[ctx, bool(limit)] = json.loads(result.stdout.splitlines()[0])["chunks"]
        for messages, sampling in zip(engine.calls, engine.samplings):
            assert engine.count_tokens(messages) + sampling.max_tokens <= ctx
        assert json.loads(result.stdout.splitlines()[-1])["text"] == DOC
    assert counts[4096, False] < counts[256, False] < counts[256, True]


def test_a_long_paragraph_is_cut_at_sentence_boundaries(cli, engine, tmp_path):
    sentences = [f"Sentence number {i} talks about topic {i} at length." for i in range(60)]
    src = tmp_path / "long.txt"
    src.write_text(" ".join(sentences) + "\n")
    engine.context_size = 256
    result = cli(["translate", str(src), "--to", "fr", "--no-resume"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == src.read_text()
    assert len(engine.calls) > 3
    for messages in engine.calls:
        assert user_text(messages).endswith("at length.")


def test_edited_source_retranslates_only_the_edited_chunks(cli, engine, doc):
    engine.transform = upper_keeping_code
    assert cli(["translate", str(doc), "--to", "fr"]).exit_code == 0
    first = len(engine.calls)
    engine.calls.clear()
    doc.write_text(DOC.replace("Thanks for reading.", "Thanks a lot for reading."))
    result = cli(["translate", str(doc), "--to", "fr"])
    assert result.exit_code == 0
    assert len(engine.calls) == 1 and "THANKS A LOT FOR READING." in result.stdout
    assert first > 1
    engine.calls.clear()
    assert cli(["translate", str(doc), "--to", "fr", "--no-resume"]).exit_code == 0
    assert len(engine.calls) == first


def test_another_target_or_template_setting_is_not_served_from_the_cache(cli, engine, doc):
    assert cli(["translate", str(doc), "--to", "fr"]).exit_code == 0
    n = len(engine.calls)
    assert cli(["translate", str(doc), "--to", "de"]).exit_code == 0
    assert len(engine.calls) == 2 * n
    assert cli(["translate", str(doc), "--to", "fr", "--register", "formal"]).exit_code == 0
    assert len(engine.calls) == 3 * n
    assert cli(["translate", str(doc), "--to", "fr", "--temperature", "0.9"]).exit_code == 0
    assert len(engine.calls) == 4 * n


# ---------------------------------------------------------------- resume and atomic output


def test_interrupted_run_keeps_finished_chunks_and_resumes(cli, engine, doc, tmp_path, isolated_home):
    engine.transform = upper_keeping_code
    out = tmp_path / "out.md"
    out.write_text("previous translation\n")
    engine.interrupt_after = 3
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(out), "--force"])
    assert result.exit_code == 130
    assert "run the same command again" in " ".join(result.stderr.split())
    assert out.read_text() == "previous translation\n"  # atomic: the old file is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.md")]  # no temporary left
    cache_files = list((isolated_home / "translations").glob("*.jsonl"))
    assert len(cache_files) == 1 and len(cache_files[0].read_text().splitlines()) == 3
    assert (isolated_home / "translations").stat().st_mode & 0o777 == 0o700

    engine.interrupt_after = None
    engine.calls.clear()
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(out), "--force", "--json"])
    assert result.exit_code == 0, result.stderr
    start = json.loads(result.stdout.splitlines()[0])
    assert start["cached"] == 3
    assert len(engine.calls) == start["chunks"] - 3
    whole = cli(["translate", str(doc), "--to", "fr", "--no-resume"]).stdout
    assert out.read_text() == whole


def test_a_cache_line_cut_by_a_crash_is_ignored(cli, engine, doc, isolated_home):
    assert cli(["translate", str(doc), "--to", "fr"]).exit_code == 0
    n = len(engine.calls)
    (cache,) = (isolated_home / "translations").glob("*.jsonl")
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:-1]) + lines[-1][:10])
    engine.calls.clear()
    result = cli(["translate", str(doc), "--to", "fr"])
    assert result.exit_code == 0 and result.stdout == DOC
    assert len(engine.calls) == 1 and n > 1


# ---------------------------------------------------------------- glossary


def test_glossary_terms_reach_the_prompt_only_where_they_appear(cli, engine, doc, tmp_path):
    glossary = tmp_path / "terms.csv"
    glossary.write_text("term,translation\ncontext window,fenêtre de contexte\nseed,graine\nunused term,rien\n")
    result = cli(["translate", str(doc), "--to", "fr", "--glossary", str(glossary)])
    assert result.exit_code == 0, result.stderr
    systems = [m[0]["content"] for m in engine.calls]
    assert any("context window => fenêtre de contexte" in s for s in systems)
    assert not any("unused term" in s for s in systems)
    for messages in engine.calls:
        if "seed" not in user_text(messages).lower():
            assert "graine" not in messages[0]["content"]
    assert "glossary: the translation of 'context window' is missing" in result.stderr


def test_glossary_files_csv_and_toml(tmp_path):
    toml = tmp_path / "g.toml"
    toml.write_text('"API key" = "clé d\'API"\nserver = "serveur"\n')
    assert dict(load_glossary(toml).terms) == {"API key": "clé d'API", "server": "serveur"}
    table = tmp_path / "t.toml"
    table.write_text('[[term]]\nsource = "log in"\ntarget = "se connecter"\n')
    assert load_glossary(table).terms == (("log in", "se connecter"),)
    bad = tmp_path / "bad.csv"
    bad.write_text("only-one-column\n")
    with pytest.raises(Exception, match="line 1: expected two columns"):
        load_glossary(bad)


def test_glossary_with_a_template_that_cannot_take_it_is_refused(cli, engine, doc, tmp_path, isolated_home):
    folder = isolated_home / "templates"
    folder.mkdir()
    (folder / "terse.toml").write_text('system = "Translate into {target}."\nuser = "{input}"\n[variables]\ntarget = "language"\n')
    glossary = tmp_path / "g.csv"
    glossary.write_text("seed,graine\n")
    result = cli(["translate", str(doc), "--to", "fr", "--template", "terse", "--glossary", str(glossary)])
    assert result.exit_code == 1 and "--glossary" in result.stderr
    assert engine.calls == []
    result = cli(["translate", str(doc), "--to", "fr", "--template", "terse"])
    assert result.exit_code == 0, result.stderr
    assert engine.calls[0][0]["content"] == "Translate into French."


# ---------------------------------------------------------------- parallel


def test_parallel_keeps_chunks_in_flight_and_the_order(cli, engine, tmp_path):
    engine.transform = str.upper
    engine.delay = 0.05
    src = tmp_path / "many.md"
    src.write_text("".join(f"## Section {i}\n\nParagraph {i} here.\n\n" for i in range(12)))
    result = cli(["translate", str(src), "--to", "fr", "--parallel", "4"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == src.read_text().upper()
    assert engine.most_in_flight == 4


def test_parallel_tries_one_whole_chunk_at_a_time_until_one_comes_back_whole(cli, engine, tmp_path):
    # a model that flattens every chunk: with four in flight, four whole-chunk attempts would all be
    # thrown away and translated again paragraph by paragraph; one trial at a time wastes two
    engine.transform = lambda text: " ".join(text.split()).upper()
    engine.delay = 0.05
    src = tmp_path / "many.md"
    src.write_text("".join(f"## Section {i}\n\nParagraph {i} here.\n\n- item {i}\n\n" for i in range(12)))
    result = cli(["translate", str(src), "--to", "fr", "--parallel", "4", "--json", "--chunk-tokens", "24"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["chunks"] >= 8
    assert done["fell_back"] == 2 and done["packed"] == 0
    assert engine.most_in_flight == 4
    assert "## SECTION 11\n\nPARAGRAPH 11 HERE.\n\n- ITEM 11\n" in done["text"]


def test_a_whole_chunk_that_runs_past_its_structure_is_stopped_at_once(cli, engine, tmp_path):
    # a model that keeps writing paragraphs after the chunk's last one: the reply is abandoned as
    # soon as it has more paragraphs than the chunk (not at its length limit), then sent piece by piece
    engine.word_by_word = True
    engine.transform = lambda text: text.upper() + "".join(f"\n\nMore words number {i}." for i in range(200))
    src = tmp_path / "two.md"
    src.write_text("First paragraph here.\n\nSecond paragraph here.\n")
    result = cli(["translate", str(src), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["fell_back"] == 1 and done["packed"] == 0
    assert done["text"] == "FIRST PARAGRAPH HERE.\n\nSECOND PARAGRAPH HERE.\n"  # the bare pieces stop at their blank line
    whole_reply = len(re.findall(r"\s*\S+", engine.transform("First paragraph here.\n\nSecond paragraph here.")))
    assert engine.pieces_sent < 30 < whole_reply  # 3 paragraphs in: 12 words, not 800


def test_a_preamble_the_model_writes_first_is_skipped_not_kept_as_the_translation(cli, engine, tmp_path):
    # small models often answer "Voici la traduction :" (or echo the instruction) on a line of its
    # own before the translation; with a one-line source that line used to be the whole result
    preambles = iter(["Voici la traduction en français :\n", "Translate into French:\n\n", "", "Traduction :\n"] * 3)
    engine.transform = lambda text: next(preambles) + text.upper()
    src = tmp_path / "doc.md"
    src.write_text("# Title\n\nFirst paragraph of the text.\n\n- An item of the list\n\nRules: be kind.\n\nThe last one.\n")
    result = cli(["translate", str(src), "--to", "fr", "--chunk-tokens", "10", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert 1 <= done["packed"] < done["chunks"]  # whole chunks lose their preamble too, as bare pieces do
    assert done["text"] == "# TITLE\n\nFIRST PARAGRAPH OF THE TEXT.\n\n- AN ITEM OF THE LIST\n\nRULES: BE KIND.\n\nTHE LAST ONE.\n"


def test_a_line_ending_with_a_colon_is_kept_where_the_source_has_one(cli, engine, tmp_path):
    engine.transform = lambda text: "RÈGLES :\n" + text.upper() if text.startswith("Rules") else text.upper()
    src = tmp_path / "doc.md"
    src.write_text("Rules:\n")
    result = cli(["translate", str(src), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "RÈGLES :\n"


def test_a_line_of_the_prompt_the_model_writes_back_is_never_kept(cli, engine, tmp_path):
    # SmolLM2 sometimes answers with the template's instruction line first, or with it alone
    echo = "Reply with the translation only: no notes, no explanations, no quotes around it."
    engine.transform = lambda text: echo + "\n" + ("" if "Second" in text else text.upper())
    src = tmp_path / "doc.md"
    src.write_text("First paragraph here.\n\nSecond paragraph here.\n\n- Reply with the translation only: a rule we quote.\n")
    result = cli(["translate", str(src), "--to", "fr", "--chunk-tokens", "10"])
    assert result.exit_code == 0, result.stderr
    # the echo-only reply keeps its source; a source that begins like the prompt's line is translated
    assert result.stdout == "FIRST PARAGRAPH HERE.\n\nSecond paragraph here.\n\n- REPLY WITH THE TRANSLATION ONLY: A RULE WE QUOTE.\n"
    assert "warning: 1 of 3 pieces were kept in the source language: their replies failed the checks twice (length 1)" in result.stderr
    assert sum(user_text(call) == "Second paragraph here." for call in engine.calls) == 2  # sent once more


def test_an_echo_is_a_line_that_begins_like_a_prompt_line_and_that_the_source_does_not_hold():
    prompt = ["Reply with the translation only: no notes, no explanations.", "Translate into French:"]
    assert echoes_prompt("Reply with the translation only, without notes.", "Le disque.", prompt)
    assert echoes_prompt("translate into French", "Le disque.", prompt)
    assert not echoes_prompt("Reply with the file's path.", "Le disque.", prompt)  # three words in common, not five
    quoted = "The rule: Reply with the translation only: no notes, no explanations."
    assert not echoes_prompt("Reply with the translation only: no notes, no explanations.", quoted, prompt)


def test_a_reply_that_loops_is_cut_where_it_starts_repeating(cli, engine, tmp_path):
    engine.word_by_word = True
    engine.transform = lambda text: "Le disque est plein. " + "Videz la corbeille puis recommencez. " * 50
    src = tmp_path / "one.md"
    src.write_text("The disk is full. Empty the bin and try again.\n")
    result = cli(["translate", str(src), "--to", "fr", "-o", str(tmp_path / "out.md")])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "out.md").read_text() == "Le disque est plein. Videz la corbeille puis recommencez.\n"
    assert "warning: 1 reply began repeating itself and was cut there" in result.stderr
    assert engine.pieces_sent < 20  # stopped at the repetition, not at the end of 300 words


def test_a_reply_that_writes_one_phrase_again_and_again_is_cut_after_its_first_copy(cli, engine, tmp_path):
    engine.word_by_word = True
    engine.transform = lambda text: "La commande gère" + " la gestion des fichiers" * 60
    src = tmp_path / "one.md"
    src.write_text("The command manages the files.\n")
    result = cli(["translate", str(src), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "La commande gère la gestion des fichiers\n"
    assert engine.pieces_sent < 25 and "began repeating itself" in result.stderr


def test_a_source_that_repeats_itself_may_be_repeated(cli, engine, tmp_path):
    engine.transform = str.upper
    src = tmp_path / "one.md"
    src.write_text("Press the red button. Wait a moment. Press the red button.\n")
    result = cli(["translate", str(src), "--to", "fr"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "PRESS THE RED BUTTON. WAIT A MOMENT. PRESS THE RED BUTTON.\n"
    assert "repeating" not in result.stderr


def test_an_engine_that_decodes_replies_together_gets_a_chunks_pieces_at_once(cli, monkeypatch, tmp_path):
    # the batched local engine is a ``Concurrent`` one: a chunk that goes piece by piece then
    # fills its sequences with all its paragraphs, instead of one paragraph at a time per chunk
    engine = ConcurrentScripted()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    opened: list[int] = []
    stream = engine.stream

    def counting(messages, sampling):
        reply = stream(messages, sampling)
        opened.append(len(engine.calls) - engine.pieces_sent)
        return reply

    engine.stream = counting  # type: ignore[method-assign]
    engine.transform = lambda text: " ".join(text.split()).upper()  # breaks whole chunks
    src = tmp_path / "doc.md"
    src.write_text("".join(f"Paragraph {i} here.\n\n" for i in range(5)))
    result = cli(["translate", str(src), "--to", "fr", "--json"])
    assert result.exit_code == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["fell_back"] == 1 and done["text"] == "".join(f"PARAGRAPH {i} HERE.\n\n" for i in range(5))
    # one whole-chunk trial, then five pieces sent before any of them was read
    assert len(engine.calls) == 6 and engine.pieces_sent == 6 and max(opened) == 5


def test_parallel_error_stops_and_reports(cli, engine, tmp_path):
    from gptcli.errors import EngineError

    def fail(text: str) -> str:
        if "7" in text:
            raise EngineError("server error 500")
        return text

    engine.transform = fail
    src = tmp_path / "many.md"
    src.write_text("".join(f"## Section {i}\n\nParagraph {i}.\n\n" for i in range(12)))
    result = cli(["translate", str(src), "--to", "fr", "--parallel", "3", "-o", str(tmp_path / "o.md")])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: server error 500"
    assert not (tmp_path / "o.md").exists()


# ---------------------------------------------------------------- input, output and errors


def test_stdin_to_stdout(cli, engine):
    engine.transform = str.upper
    result = cli(["translate", "--to", "fr"], stdin="Hello there.\n\nSecond paragraph.\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "HELLO THERE.\n\nSECOND PARAGRAPH.\n"


def test_several_files_need_an_output_dir(cli, engine, doc, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Some words.\n")
    result = cli(["translate", str(doc), str(other), "--to", "fr"])
    assert result.exit_code == 2 and "--output-dir" in result.stderr
    outdir = tmp_path / "fr"
    result = cli(["translate", str(doc), str(other), "--to", "fr", "--output-dir", str(outdir)])
    assert result.exit_code == 0, result.stderr
    assert (outdir / "manual.md").read_text() == DOC
    assert (outdir / "other.txt").read_text() == "Some words.\n"
    assert "translated" in result.stderr


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "binary"),
        (lambda p: p.write_bytes("café".encode("latin-1")), "--encoding"),
    ],
    ids=["missing", "directory", "binary", "bad-utf8"],
)
def test_bad_inputs_are_one_line_errors_before_the_model_loads(cli, engine, tmp_path, setup, message):
    path = tmp_path / "input.md"
    setup(path)
    result = cli(["translate", str(path), "--to", "fr"])
    assert result.exit_code == 1
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert engine.calls == []


def test_encoding_option_and_utf16_and_bom(cli, engine, tmp_path):
    engine.transform = str.upper
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Un café.\n".encode("latin-1"))
    result = cli(["translate", str(latin), "--to", "en", "--encoding", "latin-1"])
    assert result.exit_code == 0 and result.stdout == "UN CAFÉ.\n"
    wide = tmp_path / "wide.txt"
    wide.write_bytes("\ufeffHello.\r\n".encode("utf-16-le"))
    out = tmp_path / "wide.fr.txt"
    assert cli(["translate", str(wide), "--to", "fr", "-o", str(out)]).exit_code == 0
    assert out.read_bytes() == "\ufeffHELLO.\r\n".encode("utf-16-le")
    bom = tmp_path / "bom.md"
    bom.write_bytes(b"\xef\xbb\xbfHi.\n")
    out = tmp_path / "bom.fr.md"
    assert cli(["translate", str(bom), "--to", "fr", "-o", str(out)]).exit_code == 0
    assert out.read_bytes() == b"\xef\xbb\xbfHI.\n"


def test_empty_file_gives_empty_output_and_a_notice(cli, engine, tmp_path):
    empty = tmp_path / "empty.md"
    empty.write_text("")
    out = tmp_path / "empty.fr.md"
    result = cli(["translate", str(empty), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_bytes() == b""
    assert "empty" in result.stderr
    assert engine.calls == []
    code_only = tmp_path / "code.md"
    code_only.write_text("```\nx = 1\n```\n\n42\n")
    result = cli(["translate", str(code_only), "--to", "fr"])
    assert result.exit_code == 0 and result.stdout == code_only.read_text()
    assert "nothing to translate" in result.stderr and engine.calls == []


def test_existing_output_needs_force_and_the_input_is_never_overwritten(cli, engine, doc, tmp_path):
    out = tmp_path / "out.md"
    out.write_text("keep me\n")
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(out)])
    assert result.exit_code == 1 and "--force" in result.stderr
    assert out.read_text() == "keep me\n"
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(doc), "--force"])
    assert result.exit_code == 2 and "input file itself" in result.stderr
    result = cli(["translate", str(doc), "--to", "fr", "--output-dir", str(doc.parent), "--force"])
    assert result.exit_code == 2 and "input file itself" in result.stderr
    assert doc.read_text() == DOC
    assert engine.calls == []
    result = cli(["translate", str(doc), "--to", "fr", "-o", str(out), "--force"])
    assert result.exit_code == 0 and out.read_text() == DOC


def test_language_codes_and_names(cli, engine, doc):
    assert resolve_language("fr").name == "French"
    assert resolve_language("Français").name == "French"
    assert resolve_language("zh_cn").name == "Simplified Chinese"
    assert resolve_language("de-AT").name == "German (Austria)"
    assert resolve_language("zh-TW").spaceless
    with pytest.raises(UsageError, match="did you mean French"):
        resolve_language("Frnch")
    result = cli(["translate", str(doc), "--to", "Klingonese"])
    assert result.exit_code == 2 and "unknown language" in result.stderr
    result = cli(["translate", str(doc)])
    assert result.exit_code == 2 and "--to" in result.stderr
    result = cli(["translate", str(doc), "--to", "German", "--from", "en"])
    assert result.exit_code == 0
    assert "from English into German" in engine.calls[0][0]["content"]


def test_progress_bar_only_when_stderr_is_a_terminal(engine, doc):
    import io

    from gptcli.cli import run
    from gptcli.render import Env

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    class Pipe(io.StringIO):
        def isatty(self) -> bool:
            return False

    engine.delay = 0.3
    env = Env(stdin=Pipe(""), stdout=Pipe(), stderr=Tty())
    assert run(["translate", str(doc), "--to", "fr", "--no-resume"], env=env) == 0
    assert "chunks" in env.stderr.getvalue() and "tokens" in env.stderr.getvalue()
    assert env.stdout.getvalue() == DOC
    env = Env(stdin=Pipe(""), stdout=Pipe(), stderr=Pipe())
    assert run(["translate", str(doc), "--to", "fr", "--no-resume"], env=env) == 0
    assert env.stderr.getvalue() == ""


def test_help_has_an_example(cli, capsys):
    result = cli(["translate", "--help"])
    assert result.exit_code == 0
    assert "Example: gptcli translate" in capsys.readouterr().out


# ---------------------------------------------------------------- the pieces


def test_parse_marks_what_is_sent_and_what_is_kept():
    blocks = parse_document(DOC)
    assert "".join(b.text for b in blocks) == DOC
    kinds = [b.kind for b in blocks if isinstance(b, Unit)]
    assert kinds.count("heading") == 3 and kinds.count("item") == 4 and kinds.count("row") == 3
    kept = "".join(b.text for b in blocks if isinstance(b, Verbatim))
    assert "print(" in kept and "title: Manual" in kept and "| ------ |" in kept
    rows = [b for b in blocks if isinstance(b, Unit) and b.kind == "row"]
    assert rows[1].parts() == ["ctx", "The context window"]  # 4096 is not sent


def test_split_long_text_joins_back_and_respects_the_limit():
    count = lambda t: len(t.split())  # noqa: E731
    text = "One two three. Four five six seven!  Eight nine, ten eleven twelve; thirteen.\nFourteen fifteen."
    pieces = split_long_text(text, 4, count)
    assert "".join(p + s for p, s in pieces) == text
    assert all(count(p) <= 4 for p, _ in pieces)
    chinese = "这是第一句。这是第二句！" * 5
    pieces = split_long_text(chinese, 1, lambda t: max(1, len(t) // 6))
    assert "".join(p + s for p, s in pieces) == chinese and len(pieces) > 1


def test_assembler_releases_text_in_order_whatever_order_chunks_finish():
    count = lambda t: len(t.split()) + t.count("\n")  # noqa: E731
    plan = plan_document(DOC, count, 12)
    assembler = Assembler(plan)
    out = []
    for chunk in reversed(plan.chunks):
        assembler.add(chunk, [a.text for a in chunk.atoms])
        out.append(assembler.drain())
    assert out[0] == "---\ntitle: Manual\ntags: [a, b]\n---\n\n"  # front matter needs no translation
    assert all(part == "" for part in out[1:-1])
    assert "".join(out) == DOC


def one_chunk(text: str):
    (chunk,) = plan_document(text, lambda t: len(t.split()) + 1, 500).chunks
    return chunk


def test_a_whole_chunk_reply_is_judged_as_soon_as_its_first_line_shows_another_kind():
    # a heading translated as a paragraph (SmolLM2 did this to the manual's first chunk, and wrote
    # 300 tokens before the check saw a second unit): given up at the first line, not later
    chunk = one_chunk("# Getting started\n\nInstall the package first.\n")
    assert could_match(chunk, "# Pour commencer\n\nInstallez")
    assert not could_match(chunk, "Voici comment commencer avec le logiciel\n")
    assert could_match(chunk, "Voici comment commencer")  # a line not finished yet is not judged
    table = one_chunk("| key | what it does |\n| --- | --- |\n| Enter | sends the message |\n")
    assert not could_match(table, "| touche | ce qu'elle fait | en plus |\n")  # a row with a cell too many
    assert could_match(table, "| touche | ce qu'elle fait |\n")


def test_a_whole_chunk_reply_keeps_its_chance_after_a_preamble_or_a_line_that_may_start_a_table():
    chunk = one_chunk("# Getting started\n\nInstall the package first.\n")
    assert could_match(chunk, "Voici la traduction :\n")  # a preamble: what follows decides
    assert could_match(chunk, "Voici la traduction :\n\n# Pour commencer\n\nInstallez le paquet.\n")
    assert not could_match(chunk, "Voici la traduction :\n\nPour commencer\n")
    table = one_chunk("key | what it does\n--- | ---\nEnter | sends the message\n")
    assert could_match(table, "touche | ce qu'elle fait\n")  # a row once its separator line comes
