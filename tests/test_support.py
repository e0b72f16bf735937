"""support --kb: passages from Markdown and text, BM25 ranking, fitting the context, the command."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gptcli.errors import ContextOverflowError, InputError
from gptcli.knowledge import (
    NO_MATCH,
    Passage,
    ground,
    load_passages,
    rank,
    reply_reserve,
    split_passages,
    terms,
)
from gptcli.templates import load_template
from tests.fakes import FakeEngine

ANSWER = (
    "Refunds are paid back to the original card within 9 business days. "
    "To ask for a refund, write to refunds@acme.example with your order number."
)
TOPICS = [
    "Shipping to Canada", "Password reset", "Invoice download", "Gift cards", "Warranty for batteries",
    "Changing the delivery address", "Student discount", "Screen calibration", "Bluetooth pairing",
    "Firmware updates", "Account deletion", "Two-factor login", "Loyalty points", "Store opening hours",
    "Bulk orders", "Recycling old devices", "Colour options", "Charger compatibility", "Water resistance",
    "Data export",
]
FILLER = (
    "device order account customer support team please contact within working settings menu select option "
    "available country standard express tracking number email confirmation receipt"
).split()


def make_faq(folder: Path, answer_at: int = 13) -> Path:
    """A help-centre FAQ of ~22,000 characters (over 3,000 tokens); one section holds the refund answer."""
    rng = random.Random(7)
    sections = ["# Acme Help Centre\n\nWelcome to the help centre for the Acme Lamp.\n"]
    for topic in TOPICS:
        body = " ".join(rng.choice(FILLER) for _ in range(150))
        sections.append(f"## {topic}\n\n{topic} is handled by our team. {body}.\n")
    sections.insert(answer_at, f"## Refunds\n\n{ANSWER}\n")
    path = folder / "faq.md"
    path.write_text("\n".join(sections), encoding="utf-8")
    return path


# ---------------------------------------------------------------- passages

def test_markdown_sections_become_passages_under_their_heading_path():
    text = "Intro.\n\n# Billing\n\n## Refunds\n\nPaid in 9 days.\n\nAsk by email.\n\n## Invoices\n\nMonthly.\n\n# Shipping\n\nWorldwide.\n"
    passages = split_passages(text, "kb.md")
    assert [(p.title, p.text) for p in passages] == [
        ("", "Intro."),
        ("Billing > Refunds", "Paid in 9 days.\n\nAsk by email."),
        ("Billing > Invoices", "Monthly."),
        ("Shipping", "Worldwide."),
    ]
    assert passages[1].line == 7 and passages[1].label == "kb.md:7 (Billing > Refunds)"


def test_a_hash_inside_a_code_fence_is_not_a_heading():
    text = "# Setup\n\nRun this:\n\n```sh\n# install\n\npip install x\n```\n"
    passages = split_passages(text, "kb.md")
    assert len(passages) == 1 and passages[0].title == "Setup" and "# install" in passages[0].text


def test_a_longer_fence_stays_open_past_a_shorter_one_inside_it():
    # a four-backtick fence showing a three-backtick example: the inner ``` does not close it,
    # so "# comment" in the example is code, not a heading (the translator splits the same way)
    text = "# Docs\n\n````md\n```sh\n# comment\n```\n````\n\nAfter.\n"
    passages = split_passages(text, "kb.md")
    assert [p.title for p in passages] == ["Docs"]
    assert "# comment" in passages[0].text and "After." in passages[0].text


def test_long_sections_split_at_paragraphs_and_long_paragraphs_at_sentences():
    paragraphs = [f"Paragraph {i} " + "word " * 60 for i in range(6)]
    long_one = " ".join(f"Sentence {i} is here." for i in range(200))
    text = "# Manual\n\n" + "\n\n".join(paragraphs) + "\n\n" + long_one + "\n"
    passages = split_passages(text, "manual.md", max_chars=700)
    assert all(len(p.text) <= 700 for p in passages)
    assert all(p.title == "Manual" for p in passages)
    joined = " ".join(p.text for p in passages)
    assert all(f"Paragraph {i}" in joined for i in range(6)) and "Sentence 199 is here." in joined
    assert not any(p.text.startswith("is here") for p in passages)


def test_plain_text_paragraphs():
    passages = split_passages("Q: Opening hours?\nA: 9 to 5.\n\nQ: Parking?\nA: Yes, free.\n", "faq.txt", max_chars=30)
    assert [p.line for p in passages] == [1, 4]


def test_load_passages_from_files_and_folders(tmp_path):
    (tmp_path / "kb").mkdir()
    (tmp_path / "kb" / "a.md").write_text("# A\n\nAlpha.\n")
    (tmp_path / "kb" / "b.txt").write_text("Beta.\n")
    (tmp_path / "kb" / "image.png").write_bytes(b"\x89PNG\x00\x00")
    single = tmp_path / "c.md"
    single.write_text("Gamma.\n")
    passages = load_passages([str(tmp_path / "kb"), str(single)])
    assert [p.text for p in passages] == ["Alpha.", "Beta.", "Gamma."]


def test_load_passages_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_passages([str(tmp_path / "missing.md")])
    (tmp_path / "empty.md").write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        load_passages([str(tmp_path / "empty.md")])
    (tmp_path / "bin.md").write_bytes(b"\x00\x01\x02")
    with pytest.raises(InputError, match="binary"):
        load_passages([str(tmp_path / "bin.md")])


# ---------------------------------------------------------------- ranking

def test_terms_drop_stop_words_and_meet_across_word_forms():
    assert terms("How do I get my refunds?") == ["get", "refund"]
    assert set(terms("refunded")) == set(terms("refunding")) == {"refund"}
    assert "退款" in terms("如何申请退款")  # CJK text is indexed as character pairs


def test_bm25_ranks_the_passage_with_the_answer_first(tmp_path):
    passages = load_passages([str(make_faq(tmp_path))])
    ranked = rank(passages, "How long does it take to get my money back as a refund?")
    assert ranked[0].passage.title.endswith("Refunds")
    assert ranked[0].bm25 > 2 * ranked[1].bm25


def test_bm25_works_for_chinese():
    passages = [
        Passage("kb.md", 1, "退款", "退款会在九个工作日内退回原支付卡。"),
        Passage("kb.md", 3, "配送", "我们向四十个国家配送商品。"),
        Passage("kb.md", 5, "密码", "在设置菜单中可以重置密码。"),
    ]
    assert rank(passages, "退款需要多长时间？")[0].passage.title == "退款"


# ---------------------------------------------------------------- fitting into the context

def test_a_small_knowledge_base_is_ranked_too():
    template = load_template("support")
    passages = [Passage("kb.md", 1, "Shipping", "We ship worldwide."), Passage("kb.md", 3, "Refunds", "Nine days.")]
    grounding = ground(template, "refund?", {}, passages, FakeEngine(context_size=4096), reserve=256)
    assert grounding.ranked
    assert [sp.passage for sp in grounding.sources] == [passages[1]]  # the one that matches, and only it
    assert "We ship worldwide." not in grounding.messages[-1]["content"]


def test_a_large_knowledge_base_is_ranked_and_fitted(tmp_path):
    template = load_template("support")
    passages = load_passages([str(make_faq(tmp_path))])
    engine = FakeEngine(context_size=600)
    knowledge_tokens = sum(engine.tokenize_count(p.text) for p in passages)
    assert knowledge_tokens > 3 * engine.context_size  # really larger than the context
    grounding = ground(template, "How long does a refund take?", {}, passages, engine, reserve=100)
    assert grounding.ranked and grounding.sources
    assert grounding.sources[0].passage.title.endswith("Refunds")
    assert all(sp.score > 0 for sp in grounding.sources)
    assert engine.count_tokens(grounding.messages) + 100 <= engine.context_size
    assert ANSWER in grounding.messages[-1]["content"]


def test_when_many_passages_match_the_best_ones_fill_the_room(tmp_path):
    template = load_template("support")
    passages = load_passages([str(make_faq(tmp_path))])
    engine = FakeEngine(context_size=700)
    question = "my order tracking number and confirmation email"  # words that every filler section has
    grounding = ground(template, question, {}, passages, engine, reserve=100)
    chosen = [sp.passage for sp in grounding.sources]
    assert 1 < len(chosen) < len(passages)
    scores = [sp.score for sp in grounding.sources]
    assert scores == sorted(scores, reverse=True)
    assert engine.count_tokens(grounding.messages) + 100 <= engine.context_size


def test_no_matching_passage_sends_none_and_says_so(tmp_path):
    template = load_template("support")
    passages = load_passages([str(make_faq(tmp_path))])
    grounding = ground(template, "zebra xylophone", {}, passages, FakeEngine(context_size=600), reserve=100)
    assert grounding.sources == [] and NO_MATCH in grounding.messages[-1]["content"]


def test_no_room_for_knowledge_is_a_clear_error():
    template = load_template("support")
    with pytest.raises(ContextOverflowError, match="larger --ctx"):
        ground(template, "word " * 300, {}, [Passage("kb", 1, "", "x")], FakeEngine(context_size=400), reserve=100)


def test_reply_reserve():
    assert reply_reserve(1024, 48) == 48
    assert reply_reserve(1024, 1024) == 256
    assert reply_reserve(4096, 1024) == 1024
    assert reply_reserve(4096, None) == 1024


# ---------------------------------------------------------------- the command (fake engine)

def test_support_sends_the_relevant_passage_and_lists_sources(cli, fake_engine, tmp_path):
    fake_engine.context_size = 600
    faq = make_faq(tmp_path)
    result = cli(["support", "How long does a refund take?", "--kb", str(faq), "-v", "company=Acme", "--show-sources", "-n", "64"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from the fake engine.\n"
    system, user = fake_engine.calls[0][0]["content"], fake_engine.calls[0][-1]["content"]
    assert "Acme" in system
    assert ANSWER in user and "How long does a refund take?" in user
    assert "Welcome to the help centre" not in user  # not a blind truncation from the top
    lines = result.stderr.splitlines()
    assert lines[0].startswith("sources: ") and " passages, the most relevant" in lines[0]
    assert lines[1].startswith(f"  [1] {faq}:") and "Refunds" in lines[1]


def test_support_sources_in_json(cli, fake_engine, tmp_path):
    fake_engine.context_size = 600
    result = cli(["support", "refund?", "--kb", str(make_faq(tmp_path)), "--json", "--show-sources", "-n", "64"])
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "sources" and events[0]["ranked"] is True
    assert events[0]["passages"][0]["title"].endswith("Refunds")
    assert [e["type"] for e in events[1:]][-1] == "done"
    assert result.stderr == ""


def test_support_question_from_stdin(cli, fake_engine, tmp_path):
    kb = tmp_path / "kb.md"
    kb.write_text("# Hours\n\nOpen 9 to 5.\n")
    result = cli(["support", "--kb", str(kb)], stdin="Hello, when are you open?\n")
    assert result.exit_code == 0, result.stderr
    user = fake_engine.calls[0][-1]["content"]
    assert "Open 9 to 5." in user and "when are you open?" in user
    assert result.stderr == ""  # no sources unless asked


def test_support_without_a_knowledge_base_says_there_is_none(cli, fake_engine):
    result = cli(["support", "Do you ship to Mars?"])
    assert result.exit_code == 0
    assert "(no knowledge base was given)" in fake_engine.calls[0][-1]["content"]


DEMO_NOTE = (
    "note: smollm2-135m is a 135M demo model and cannot really write support replies; for that try"
    " `gptcli models pull qwen2.5-1.5b` (1.1 GB, multilingual) and --model qwen2.5-1.5b"
)


def test_support_names_the_demo_model_once_and_what_to_pull_instead(cli, fake_engine):
    fake_engine.model_name = "smollm2-135m"
    result = cli(["support", "--each-line"], stdin="Do you ship to Mars?\nWhen are you open?\n")
    assert result.exit_code == 0, result.stderr
    assert len(fake_engine.calls) == 2  # two requests, one note
    assert result.stderr.splitlines().count(DEMO_NOTE) == 1
    fake_engine.model_name = "qwen2.5-1.5b"
    assert "demo model" not in cli(["support", "Do you ship to Mars?"]).stderr


def test_support_errors(cli, fake_engine, tmp_path):
    missing = cli(["support", "hi", "--kb", str(tmp_path / "none.md")])
    assert missing.exit_code == 1 and "no such file" in missing.stderr
    kb = tmp_path / "kb.md"
    kb.write_text("Facts.\n")
    both = cli(["support", "hi", "--kb", str(kb), "-v", "knowledge=x"])
    assert both.exit_code == 2 and "not both" in both.stderr
    nothing = cli(["support", "--kb", str(kb)])
    assert nothing.exit_code == 1 and "nothing to ask" in nothing.stderr
    assert fake_engine.calls == []


def test_support_with_a_template_lacking_knowledge(cli, fake_engine, tmp_path):
    from gptcli.templates import user_dir

    user_dir().mkdir(parents=True)
    (user_dir() / "plain.toml").write_text('user = "{input}"')
    kb = tmp_path / "kb.md"
    kb.write_text("Facts.\n")
    result = cli(["support", "hi", "--kb", str(kb), "-t", "plain"])
    assert result.exit_code == 1 and "no 'knowledge' variable" in result.stderr


# ---------------------------------------------------------------- the real model

@pytest.mark.model
def test_support_picks_the_answer_from_a_knowledge_base_larger_than_the_context(run_gptcli, tmp_path):
    from gptcli.engines.local import load_local_engine
    from gptcli.models import embedded_model_path

    faq = make_faq(tmp_path)
    tokens = load_local_engine(embedded_model_path(), ctx=1024).tokenize_count(faq.read_text())
    assert tokens > 2 * 1024, "the knowledge base must be larger than the context window"
    proc = run_gptcli(
        "support", "How long does a refund take?", "--kb", str(faq), "--ctx", "1024", "-n", "48",
        "--seed", "3", "--show-sources", "--json", "-v", "company=Acme",
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    sources = events[0]
    assert sources["type"] == "sources" and sources["ranked"] is True
    assert sources["passages"][0]["title"].endswith("Refunds")
    assert sources["total_passages"] > len(TOPICS)
    assert proc.stderr.splitlines().count(DEMO_NOTE) == 1
    done = events[-1]
    assert done["type"] == "done" and done["text"].strip()
    assert done["usage"]["prompt_tokens"] + done["usage"]["completion_tokens"] <= 1024
