"""Span placeholders: inline code, link targets and URLs sent as ``{1}``, ``{2}``... and put back after."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from gptcli.translate.document import Unit, has_words
from gptcli.translate.planning import DocChunk, Plan

if TYPE_CHECKING:
    from gptcli.translate.job import ChunkResult, Events


SPAN_PATTERN = re.compile(r"`[^`\n]+`|(?<=\]\()[^()\s]+(?=\))|https?://[^\s<>()\[\]`]*[^\s<>()\[\]`.,;:!?'\"]")
_PLACEHOLDER = re.compile(r"\{[ \t]*(\d{1,4})[ \t]*\}")
_PLACEHOLDER_START = re.compile(r"\{[ \t]*\d{0,4}[ \t]*$")  # the start of one, still being written


def lost_spans(source: str, translation: str) -> list[str]:
    """The inline code spans, link targets and URLs of ``source`` that ``translation`` does not
    hold as they are."""
    missing = Counter(SPAN_PATTERN.findall(source))
    missing.subtract(SPAN_PATTERN.findall(translation))
    return [span for span, count in missing.items() if count > 0]


def protect_spans(chunk: DocChunk) -> tuple[DocChunk, list[str]]:
    """``chunk`` with its inline code, link targets and URLs replaced by placeholders ``{1}``,
    ``{2}``..., and the spans they stand for (``restore_spans`` puts them back).

    The model then has nothing in them to translate or get wrong, and fewer tokens to read and
    write (a URL is a dozen tokens, its placeholder three). The same span is the same placeholder.
    A chunk whose words already hold something like a placeholder (outside code: `"{0}".format`
    is masked as any code), or with a line that would be left without words ("[](docs)"), is
    left as it is."""
    if not SPAN_PATTERN.search(chunk.source) or any(_PLACEHOLDER.search(SPAN_PATTERN.sub(" ", atom.text)) for atom in chunk.atoms):
        return chunk, []
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return "{%d}" % numbers.setdefault(match.group(0), len(numbers) + 1)

    atoms = [replace(atom, text=SPAN_PATTERN.sub(number, atom.text)) for atom in chunk.atoms]
    if not numbers or not all(_same_wordy_lines(a.text, b.text) for a, b in zip(chunk.atoms, atoms)):
        return chunk, []
    blocks = chunk.blocks
    if chunk.packed:  # what is sent is the units' Markdown: each unit gets its parts' new text
        parts = iter(atom.text for atom in atoms)
        blocks = [b.with_parts([next(parts) for _ in b.parts()]) if isinstance(b, Unit) else b for b in blocks]
        # and read back whole: a table row "| `a|b` x `a|b` |" masked to "| `a|b{1}a|b` |" reads as one
        # code span, without words, though each cell kept some
        if not all(_same_wordy_lines(a.text, b.text) for a, b in zip(chunk.blocks, blocks) if isinstance(a, Unit)):
            return chunk, []
    return DocChunk(chunk.index, atoms, blocks, chunk.source_tokens), list(numbers)


def _same_wordy_lines(source: str, masked: str) -> bool:
    """Whether each line of ``masked`` has words where ``source``'s has: a line that had words only
    in a link's target would be read back as one without (kept as it is, out of its paragraph)."""
    return all(has_words(a) == has_words(b) for a, b in zip(source.split("\n"), masked.split("\n")))


def restore_spans(text: str, spans: Sequence[str]) -> str:
    """``text`` with each placeholder of ``protect_spans`` replaced by the span it stands for
    (one of a number the model made up goes: the source had none such)."""

    def back(match: re.Match[str]) -> str:
        k = int(match.group(1))
        return spans[k - 1] if 1 <= k <= len(spans) else ""

    return _PLACEHOLDER.sub(back, text) if spans else text


class RestoringEvents:
    """Events that show a reply's text with its spans put back (a placeholder the model is still
    writing is held until it is whole)."""

    def __init__(self, events: Events, spans: Sequence[str]) -> None:
        self.events, self.spans, self.held = events, spans, ""

    def start(self, plan: Plan, cached: int) -> None:
        self.events.start(plan, cached)

    def attempt(self, index: int) -> None:
        self.held = ""
        self.events.attempt(index)

    def token(self, index: int, text: str) -> None:
        text = self.held + text
        cut = _PLACEHOLDER_START.search(text)
        self.held = text[cut.start() :] if cut else ""
        if cut:
            text = text[: cut.start()]
        if text:
            self.events.token(index, restore_spans(text, self.spans))

    def chunk_done(self, chunk: DocChunk, result: ChunkResult) -> None:
        self.events.chunk_done(chunk, result)
