"""Knowledge-base grounding for ``support --kb``: passages, BM25 ranking, and fitting them in the context."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gptcli.engines import Engine, Message
from gptcli.errors import ContextOverflowError, InputError
from gptcli.templates import Template
from gptcli.textio import read_text

KB_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".text")
PASSAGE_CHARS = 1000  # a section longer than this is split at paragraph boundaries
MAX_CHARS_PER_TOKEN = 16  # tokenizers pack fewer characters than this into a token: a cheap bound
NO_MATCH = "(nothing in the knowledge base matches this question)"

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does doing for from had has have how i if in
    into is it its me my of on or our so than that the their them then there these they this to us was
    we were what when where which who why will with would you your yours""".split()
)


@dataclass(frozen=True)
class Passage:
    """A piece of a knowledge-base file: a Markdown section or a run of paragraphs."""

    source: str  # the file, as the user named it
    line: int  # the first line of the passage in that file (1-based)
    title: str  # the heading path ("Billing > Refunds"), empty before any heading
    text: str

    @property
    def label(self) -> str:
        where = f"{self.source}:{self.line}"
        return f"{where} ({self.title})" if self.title else where

    @property
    def indexed_text(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True)
class ScoredPassage:
    passage: Passage
    score: float


# ---------------------------------------------------------------- splitting

def _blocks(lines: Sequence[str]) -> Iterable[tuple[str, int, str]]:
    """Yield ("heading", line, title-with-level) and ("block", line, text) items; code fences stay whole."""
    block: list[str] = []
    start = 0
    fence: str | None = None
    for number, line in enumerate(lines, 1):
        if fence is not None:
            block.append(line)
            if line.strip().startswith(fence):
                fence = None
            continue
        if m := _FENCE.match(line):
            if not block:
                start = number
            block.append(line)
            fence = m.group(1)
            continue
        if heading := _HEADING.match(line):
            if block:
                yield "block", start, "\n".join(block)
                block = []
            yield "heading", number, f"{len(heading.group(1))}\t{heading.group(2)}"
            continue
        if not line.strip():
            if block:
                yield "block", start, "\n".join(block)
                block = []
            continue
        if not block:
            start = number
        block.append(line)
    if block:
        yield "block", start, "\n".join(block)


def _split_long(text: str, limit: int) -> list[str]:
    """Cut one over-long block at line ends, then sentence ends, then spaces."""
    pieces: list[str] = []
    current = ""
    units = re.split(r"(?<=\n)|(?<=[.!?。！？])\s+", text)
    for unit in units:
        if not unit:
            continue
        while len(unit) > limit:
            cut = unit.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            pieces.append((current + unit[:cut]).strip())
            current, unit = "", unit[cut:]
        if current and len(current) + len(unit) + 1 > limit:
            pieces.append(current.strip())
            current = ""
        current = f"{current} {unit}" if current and not current.endswith("\n") else current + unit
    if current.strip():
        pieces.append(current.strip())
    return pieces


def split_passages(text: str, source: str, max_chars: int = PASSAGE_CHARS) -> list[Passage]:
    """Markdown sections (under their heading path) or paragraph runs, each at most ``max_chars``."""
    passages: list[Passage] = []
    headings: list[tuple[int, str]] = []
    section: list[tuple[int, str]] = []  # (line, block text) of the current section

    def flush() -> None:
        title = " > ".join(t for _, t in headings)
        group: list[str] = []
        group_line = 0
        size = 0
        for line, block in section:
            if len(block) > max_chars:
                if group:
                    passages.append(Passage(source, group_line, title, "\n\n".join(group)))
                    group, size = [], 0
                passages.extend(Passage(source, line, title, piece) for piece in _split_long(block, max_chars))
                continue
            if group and size + len(block) + 2 > max_chars:
                passages.append(Passage(source, group_line, title, "\n\n".join(group)))
                group, size = [], 0
            if not group:
                group_line = line
            group.append(block)
            size += len(block) + 2
        if group:
            passages.append(Passage(source, group_line, title, "\n\n".join(group)))
        section.clear()

    for kind, line, value in _blocks(text.splitlines()):
        if kind == "heading":
            flush()
            level_text, title = value.split("\t", 1)
            level = int(level_text)
            headings[:] = [(lvl, t) for lvl, t in headings if lvl < level]
            headings.append((level, title))
        else:
            section.append((line, value))
    flush()
    return passages


def kb_files(paths: Sequence[str]) -> list[Path]:
    """The files named by ``--kb``: files as given, folders searched for text and Markdown files."""
    found: list[Path] = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KB_SUFFIXES)
            if not inside:
                raise InputError(f"knowledge-base folder {path} has no {', '.join(KB_SUFFIXES)} files")
            found.extend(inside)
        else:
            found.append(path)
    return found


def load_passages(paths: Sequence[str], max_chars: int = PASSAGE_CHARS) -> list[Passage]:
    """Read the knowledge-base files and split them into passages."""
    passages: list[Passage] = []
    for path in kb_files(paths):
        passages.extend(split_passages(read_text(path), str(path), max_chars))
    if not passages:
        raise InputError("the knowledge base is empty: --kb files hold no text")
    return passages


# ---------------------------------------------------------------- ranking

def _stem(word: str) -> str:
    """A light English suffix stripper so 'refunds', 'refunded' and 'refund' meet."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed") and not word.endswith("eed"):
        return word[:-2]
    if len(word) > 4 and word.endswith(("ches", "shes", "xes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Search terms: lower-cased words without stop words, lightly stemmed; CJK as character bigrams."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if _CJK.search(word):
            for part in re.split(f"({_CJK.pattern})", word):
                if not part:
                    continue
                if _CJK.fullmatch(part):
                    out.extend(part if len(part) == 1 else [part[i : i + 2] for i in range(len(part) - 1)])
                elif part not in _STOPWORDS:
                    out.append(_stem(part))
        elif word not in _STOPWORDS:
            out.append(_stem(word))
    return out


class BM25:
    """Okapi BM25 over a fixed list of documents (each a list of terms)."""

    def __init__(self, documents: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.counts = [Counter(doc) for doc in documents]
        self.lengths = [len(doc) for doc in documents]
        self.average = (sum(self.lengths) / len(self.lengths)) if self.lengths else 0.0
        frequency: Counter[str] = Counter()
        for counts in self.counts:
            frequency.update(counts.keys())
        n = len(documents)
        self.idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}

    def scores(self, query: Iterable[str]) -> list[float]:
        unique = set(query)
        results: list[float] = []
        for counts, length in zip(self.counts, self.lengths):
            norm = self.k1 * (1 - self.b + self.b * length / self.average) if self.average else self.k1
            score = 0.0
            for term in unique:
                tf = counts.get(term, 0)
                if tf:
                    score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            results.append(score)
        return results


def rank(passages: Sequence[Passage], question: str) -> list[ScoredPassage]:
    """Every passage with its BM25 score for the question, best first (ties keep file order)."""
    index = BM25([terms(p.indexed_text) for p in passages])
    scored = [ScoredPassage(p, s) for p, s in zip(passages, index.scores(terms(question)))]
    return sorted(scored, key=lambda sp: -sp.score)


# ---------------------------------------------------------------- fitting into the context

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
    ranked: bool  # False: the whole knowledge base fitted and was sent in file order


def reply_reserve(context: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply: the reply limit, at most a quarter of the context (256 minimum)."""
    cap = max(256, context // 4)
    return min(max_tokens, cap) if max_tokens else cap


def ground(
    template: Template,
    question: str,
    values: Mapping[str, str],
    passages: Sequence[Passage],
    engine: Engine,
    reserve: int,
    variable: str = "knowledge",
) -> Grounding:
    """Render ``template`` with the passages that fit the context window, most relevant first.

    If the whole knowledge base fits, all of it goes in, in file order. Otherwise passages are
    ranked by BM25 against the question and taken greedily while they fit; passages that share
    no term with the question are never sent. Token counts come from the engine's tokenizer.
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
    scored = rank(passages, question)
    by_score = {id(sp.passage): sp for sp in scored}
    everything = format_knowledge(passages)
    if len(everything) <= room * MAX_CHARS_PER_TOKEN and engine.tokenize_count(everything) <= room:
        messages = render(everything)
        if engine.count_tokens(messages) + reserve <= context:
            sources = [by_score[id(p)] for p in passages]
            return Grounding(messages, sources, len(passages), ranked=False)

    chosen: list[ScoredPassage] = []
    used = 0
    for sp in scored:
        if sp.score <= 0 or room - used < 32:
            break
        if len(sp.passage.text) > (room - used) * MAX_CHARS_PER_TOKEN:
            continue  # cannot fit: skip tokenizing it
        cost = engine.tokenize_count(format_passage(len(chosen) + 1, sp.passage)) + 2
        if used + cost <= room:
            chosen.append(sp)
            used += cost
    while True:
        knowledge = format_knowledge([sp.passage for sp in chosen]) if chosen else NO_MATCH
        messages = render(knowledge)
        if engine.count_tokens(messages) + reserve <= context or not chosen:
            return Grounding(messages, chosen, len(passages), ranked=True)
        chosen.pop()  # tokens merge differently across joins: drop the least relevant and retry


def sources_report(grounding: Grounding) -> list[dict[str, object]]:
    """The passages used, as JSON-ready records (for ``--show-sources`` and ``--json``)."""
    return [
        {
            "number": i,
            "source": sp.passage.source,
            "line": sp.passage.line,
            "title": sp.passage.title,
            "score": round(sp.score, 3),
            "chars": len(sp.passage.text),
        }
        for i, sp in enumerate(grounding.sources, 1)
    ]


__all__ = [
    "BM25",
    "Grounding",
    "Passage",
    "ScoredPassage",
    "ground",
    "kb_files",
    "load_passages",
    "rank",
    "reply_reserve",
    "sources_report",
    "split_passages",
    "terms",
]
