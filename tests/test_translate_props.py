"""Property tests: with an identity translator, split then join gives back any document byte for byte."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from gptcli.engines import Sampling
from gptcli.languages import resolve_language
from gptcli.templates import parse_template
from gptcli.translate import (
    SPAN_PATTERN,
    Assembler,
    Glossary,
    Job,
    Translator,
    lost_spans,
    match_translation,
    normalize_atom,
    parse_document,
    plan_document,
    protect_spans,
)
from gptcli.repetition import loop_start, repeats_itself
from tests.test_translate import ScriptedTranslator

WORDS = ["alpha", "beta", "Gamma", "delta", "über", "naïve", "数据", "x1", "`code`", "https://example.com/a_b", "**bold**", "it's",
         "[the docs](docs/a_b.md)", "<https://example.org>", "`a|b`"]
ENDS = [".", "!", "?", "", ",", ":", "。"]


@st.composite
def sentences(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12))
    return " ".join(words) + draw(st.sampled_from(ENDS))


@st.composite
def paragraph(draw: st.DrawFn) -> list[str]:
    lines = draw(st.lists(st.lists(sentences(), min_size=1, max_size=4).map(" ".join), min_size=1, max_size=4))
    indent = draw(st.sampled_from(["", "", " ", "> ", "  "]))
    trailing = draw(st.sampled_from(["", "", "  ", " \t"]))
    return [indent + line + trailing for line in lines]


@st.composite
def block(draw: st.DrawFn) -> list[str]:
    kind = draw(st.sampled_from(["heading", "paragraph", "list", "table", "fence", "blank", "rule", "html", "quote", "numbers"]))
    if kind == "heading":
        closing = draw(st.sampled_from(["", " #", " ##"]))
        return ["#" * draw(st.integers(1, 6)) + " " + draw(sentences()) + closing]
    if kind == "paragraph":
        return draw(paragraph())
    if kind == "list":
        items = []
        for _ in range(draw(st.integers(1, 4))):
            marker = draw(st.sampled_from(["- ", "* ", "+ ", "1. ", "2) ", "- [ ] ", "  - ", "    - "]))
            items.append(marker + draw(sentences()))
            if draw(st.booleans()):
                items.append("  " + draw(sentences()))
        return items
    if kind == "table":
        cols = draw(st.integers(1, 4))
        cell = st.one_of(sentences(), st.sampled_from(["42", "", " 3.14 ", "`x`", "a \\| b"]))
        lead = draw(st.sampled_from(["| ", "|", ""]))
        rows = [lead + " | ".join(draw(cell) for _ in range(cols)) + draw(st.sampled_from([" |", "|", ""]))]
        rows.append("| " + " | ".join(draw(st.sampled_from(["---", ":--", "--:", ":-:"])) for _ in range(cols)) + " |")
        for _ in range(draw(st.integers(0, 3))):
            rows.append(lead + " | ".join(draw(cell) for _ in range(cols)) + " |")
        return rows
    if kind == "fence":
        fence = draw(st.sampled_from(["```", "~~~", "````"]))
        body = draw(st.lists(st.sampled_from(["print('hi')", "", "  x = 1  ", "# not a heading", "- not a list"]), max_size=3))
        closed = draw(st.booleans())
        return [fence + draw(st.sampled_from(["", "python", " bash"])), *body, *([fence] if closed else [])]
    if kind == "blank":
        return [draw(st.sampled_from(["", "", "   ", "\t"]))]
    if kind == "rule":
        return [draw(st.sampled_from(["---", "***", "___", "===", "- - -"]))]
    if kind == "html":
        return [draw(st.sampled_from(["<div align=\"center\">", "</div>", "<!-- a comment -->", "<br/>", "<!-- open", "close -->"]))]
    if kind == "quote":
        return ["> " + draw(sentences()), ">", "> > " + draw(sentences())]
    return [draw(st.sampled_from(["2024", "1. 2. 3.", "$ 3.50", "[link]: https://example.com"]))]


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    if draw(st.booleans()):
        lines += ["---", "title: " + draw(sentences()), "---"]
    for b in draw(st.lists(block(), min_size=0, max_size=12)):
        lines += b
        if draw(st.booleans()):
            lines.append("")
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines)
    if draw(st.booleans()) and text:
        text += eol
    return text


def count(text: str) -> int:
    return len(text.split()) + text.count("\n")


def identity_join(text: str, budget: int, packed: bool) -> str:
    plan = plan_document(text, count, budget)
    assembler = Assembler(plan)
    for chunk in plan.chunks:
        translations = match_translation(chunk, chunk.source) if packed and chunk.packed else None
        if translations is None:
            translations = [normalize_atom(atom, atom.text) for atom in chunk.atoms]
        assembler.add(chunk, translations)
    return assembler.drain()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), st.integers(8, 80), st.booleans())
def test_markdown_documents_round_trip(text: str, budget: int, packed: bool) -> None:
    assert "".join(b.text for b in parse_document(text)) == text
    assert identity_join(text, budget, packed) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",))), st.integers(8, 40), st.booleans())
def test_any_text_round_trips(text: str, budget: int, markdown: bool) -> None:
    assert "".join(b.text for b in parse_document(text, markdown)) == text
    plan = plan_document(text, count, budget, markdown=markdown)
    assembler = Assembler(plan)
    for chunk in plan.chunks:
        assembler.add(chunk, [normalize_atom(atom, atom.text) for atom in chunk.atoms])
    assert assembler.drain() == text


TEMPLATE = parse_template("echo", 'system = "to {target}"\nuser = "{input}"\n[variables]\ntarget = "x"\n', source="test")


@settings(max_examples=60, deadline=None)
@given(documents(), st.sampled_from([256, 384, 1024]), st.sampled_from([1, 3]))
@example("# alpha.\n| 42 |\n| --- |\n| `a|b` alpha `a|b`. |", 256, 1)  # masked, the row read back as one code span
def test_the_translator_with_an_echoing_engine_round_trips(text: str, ctx: int, parallel: int) -> None:
    engine = ScriptedTranslator(context_size=ctx)
    job = Job(resolve_language("fr"), resolve_language("en"), TEMPLATE, {"target": "French"}, Glossary(), Sampling(), "echo")
    translator = Translator(engine, job, parallel=parallel)
    plan = translator.plan(text, markdown=True)
    out: list[str] = []
    summary = translator.run(plan, out.append)
    assert "".join(out) == text
    assert summary.chunks == len(plan.chunks)
    assert summary.fell_back == 0  # an echo keeps every packed chunk's structure


@settings(max_examples=60, deadline=None)
@given(documents(), st.sampled_from([256, 1024]), st.sampled_from(["", "{2}", "[](x)"]))
@example("# alpha.\nalpha.\nx1.", 256, "[](x)")  # a paragraph's line of nothing but a link's target
def test_code_links_and_urls_survive_a_model_that_changes_every_word(text: str, ctx: int, odd: str) -> None:
    # the model gets placeholders for them; where a chunk cannot have them (it already holds a
    # '{2}', or a piece would have no words left), they go as they are, and a model like this
    # one changes them: such pieces are counted as having lost them
    text = text.replace("x1", odd) if odd else text
    engine = ScriptedTranslator(transform=str.upper, context_size=ctx)
    job = Job(resolve_language("fr"), resolve_language("en"), TEMPLATE, {"target": "French"}, Glossary(), Sampling(), "upper")
    translator = Translator(engine, job)
    plan = translator.plan(text, markdown=True)
    out: list[str] = []
    summary = translator.run(plan, out.append)
    lost = sum(bool(lost_spans(atom.text, atom.text.upper())) for chunk in plan.chunks for atom in chunk.atoms if protect_spans(chunk)[1] == [])
    assert summary.spans_lost == lost
    if not odd:
        assert summary.spans_lost == 0
        again = Translator(engine, job)
        for chunk in plan.chunks:  # each piece's translation holds each of its spans, as it was
            for atom, translation in zip(chunk.atoms, again.translate_chunk(chunk).translations):
                assert all(span in translation for span in SPAN_PATTERN.findall(atom.text))


# ---------------------------------------------------------------- the loop guard

NUMBERED = st.lists(st.integers(0, 10**6), min_size=1, max_size=12, unique=True).map(
    lambda ns: [f"Sentence number {n} says something." for n in ns]
)


@given(NUMBERED, st.data())
@settings(max_examples=200, deadline=None)
def test_a_reply_that_writes_a_sentence_again_is_cut_right_before_it(written, data):
    reply = " ".join(written) + " "
    assert loop_start(reply) is None  # distinct sentences are never cut
    again = data.draw(st.sampled_from(written))
    looping = reply + again + " " + data.draw(st.sampled_from(["", "And more", again]))
    assert loop_start(looping) == len(reply)  # everything before the repetition is kept


@given(NUMBERED, st.lists(st.sampled_from(["de", "la", "gestion", "du", "système", "fichier"]), min_size=1, max_size=6, unique=True), st.integers(4, 9))
@settings(max_examples=200, deadline=None)
def test_a_reply_that_ends_writing_one_phrase_again_and_again_keeps_one_copy(written, phrase, copies):
    head = " ".join(written) + " "
    group = " ".join(phrase) + " "
    reply = head + group * copies
    assume(len(group.replace(" ", "")) * 4 >= 32)  # shorter ones are no loop: "no no no no", "- - - -"
    at = loop_start(reply, sentences=False)
    assert at is not None
    assert reply[:at] == head + group  # what came before the loop, and the phrase once
    assert repeats_itself(reply) and not repeats_itself(head)


def test_short_words_said_again_are_no_loop():
    assert loop_start("No, no, no, no. Yes yes yes yes yes! - - - - - -", sentences=False) is None
    assert loop_start("| 1 | 1 | 1 | 1 | 1 |") is None
