"""Fitting ranked passages into the prompt: the best ones up to a budget, a best one too long cut to its matching part."""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gptcli import conversation
from gptcli.engines import Engine, Message
from gptcli.errors import ContextOverflowError
from gptcli.knowledge.passages import Passage
from gptcli.knowledge.ranking import Ranker, ScoredPassage, grams, terms
from gptcli.templates import Template

MAX_CHARS_PER_TOKEN = 16  # tokenizers pack fewer characters than this into a token: a cheap bound
NO_MATCH = "(nothing in the knowledge base matches this question)"
# How many passages are sent at most. benchmarks/retrieval.py, default signals, 73 questions: the
# answer is among the first 3 for 84%, the first 4 for 86%, 5 for 88%, 8 for 93%; each passage
# past the fourth adds a few points while a 135M model answers worse from a longer prompt (it
# copies from the wrong passage), so 4 it is: about 350 tokens of an FAQ.
MAX_PASSAGES = 4
MIN_PART_TOKENS = 24  # below this, a cut passage says too little to be worth its place
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def format_passage(number: int, passage: Passage) -> str:
    heading = f"[{number}] {passage.title}" if passage.title else f"[{number}]"
    return f"{heading}\n{passage.text.strip()}"


def format_knowledge(passages: Sequence[Passage]) -> str:
    return "\n\n".join(format_passage(i, p) for i, p in enumerate(passages, 1))


@dataclass(frozen=True)
class Grounding:
    """What ``support`` sends: the messages, the passages used (in prompt order), and how many there were."""

    messages: list[Message]
    sources: list[ScoredPassage]
    total_passages: int
    ranked: bool = True  # always ranked now; kept in the JSON event for readers of the old one
    signals: tuple[str, ...] = ()


# Tokens kept free for the reply: the reply limit, at most a quarter of the context (256 minimum).
reply_reserve = functools.partial(conversation.reply_reserve, floor=256)


def matching_part(passage: Passage, question: str, limit: int, engine: Engine, number: int = 1) -> Passage | None:
    """The sentences of ``passage`` around the one that best matches ``question``, as many as fit ``limit`` tokens.

    The best sentence shares the most question words (then character n-grams); its neighbours are
    added, after then before, while they fit. A sentence too long on its own is cut at a word.
    """
    sentences = [s.strip() for s in _SENTENCE.split(passage.text) if s and s.strip()]
    if not sentences:
        return None
    words, pieces = set(terms(question)), set(grams(question))

    def match(sentence: str) -> float:
        return len(words & set(terms(sentence))) + len(pieces & set(grams(sentence))) / (len(pieces) or 1)

    def part(lo: int, hi: int) -> Passage:
        text = " ".join(sentences[lo:hi])
        # dots where sentences were left out, so the model does not take a part for the whole
        return dataclasses.replace(passage, text=("… " if lo > 0 else "") + text + (" …" if hi < len(sentences) else ""))

    def fits(candidate: Passage) -> bool:
        return engine.tokenize_count(format_passage(number, candidate)) <= limit

    best = max(range(len(sentences)), key=lambda i: match(sentences[i]))
    lo, hi = best, best + 1
    if not fits(part(lo, hi)):
        head = sentences[best].split()
        while head:
            candidate = dataclasses.replace(passage, text=("… " if best else "") + " ".join(head) + " …")
            if fits(candidate):
                return candidate
            head = head[: len(head) * 3 // 4]
        return None
    grew = True
    while grew:
        grew = False
        if hi < len(sentences) and fits(part(lo, hi + 1)):
            hi, grew = hi + 1, True
        if lo > 0 and fits(part(lo - 1, hi)):
            lo, grew = lo - 1, True
    return part(lo, hi)


def ground(
    template: Template,
    question: str,
    values: Mapping[str, str],
    passages: Sequence[Passage],
    engine: Engine,
    reserve: int,
    variable: str = "knowledge",
    *,
    ranker: Ranker | None = None,
    max_passages: int = MAX_PASSAGES,
) -> Grounding:
    """Render ``template`` with the passages most relevant to the question that fit the context window.

    Passages are always ranked (``ranker``: BM25 fused with the dense signal; without one, the
    lexical signals alone) and the best ``max_passages`` are taken in rank order while they fit. A
    passage that does not fit whole is cut to its sentences that match the question rather than
    skipped for a worse one. Passages no signal ranks are never sent. Token counts come from the
    engine's tokenizer.
    """
    context = engine.context_length

    def render(knowledge: str) -> list[Message]:
        return template.render(question, {**values, variable: knowledge})

    base_tokens = engine.count_tokens(render(""))
    room = context - base_tokens - reserve
    if room <= 16:
        raise ContextOverflowError(
            f"the prompt and question take {base_tokens} tokens and the reply needs {reserve}, leaving no room"
            f" for the knowledge base in a {context}-token context (use a larger --ctx or a smaller -n)"
        )
    ranker = ranker or Ranker(passages)
    # with dense vectors every passage is ranked (standardised scores may be negative); without, a
    # passage that shares nothing with the question scores 0 and is never sent
    scored = [sp for sp in ranker.rank(question) if sp.score > 0 or ranker.dense][:max_passages]

    chosen: list[ScoredPassage] = []
    used = 0
    for sp in scored:
        left = room - used - 2
        if left < MIN_PART_TOKENS:
            break
        number = len(chosen) + 1
        if len(sp.passage.text) <= left * MAX_CHARS_PER_TOKEN:
            cost = engine.tokenize_count(format_passage(number, sp.passage)) + 2
            if cost <= room - used:
                chosen.append(sp)
                used += cost
                continue
        part = matching_part(sp.passage, question, left, engine, number)
        if part is not None:
            chosen.append(dataclasses.replace(sp, passage=part, cut=True))
            used += engine.tokenize_count(format_passage(number, part)) + 2
    while True:
        knowledge = format_knowledge([sp.passage for sp in chosen]) if chosen else NO_MATCH
        messages = render(knowledge)
        if engine.count_tokens(messages) + reserve <= context or not chosen:
            signals = tuple(s for s in ("bm25", "grams", "dense") if s in ranker.signals and (s != "dense" or ranker.dense))
            return Grounding(messages, chosen, len(ranker.passages), True, signals)
        chosen.pop()  # tokens merge differently across joins: drop the least relevant and retry


def sources_report(grounding: Grounding) -> list[dict[str, object]]:
    """The passages used, as JSON-ready records (for ``--show-sources`` and ``--json``)."""
    return [
        {
            "number": i,
            "source": sp.passage.source,
            "line": sp.passage.line,
            "title": sp.passage.title,
            "score": round(sp.score, 4),
            "bm25_rank": sp.bm25_rank,
            "dense_rank": sp.dense_rank,
            "grams_rank": sp.grams_rank,
            "similarity": None if sp.similarity is None else round(sp.similarity, 3),
            "cut": sp.cut,
            "chars": len(sp.passage.text),
        }
        for i, sp in enumerate(grounding.sources, 1)
    ]
