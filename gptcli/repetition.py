"""Replies that got stuck in a loop: the same sentence again, or one phrase over and over.

Small models (and sampling at low temperature) fall into loops; a reply that repeats itself is
cut where the repetition starts. ``translate`` checks each piece with it, and every generating
command stops a reply once it loops (see ``LoopGuard``-style callers).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence


SENTENCE_END = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s|$)|[。！？]+[」』”’)]*|\n")
LOOP_UNIT_CHARS = 16  # sentences shorter than this ("Yes.", "- 1") may rightly repeat; a CJK character counts 2


def _sentences(text: str) -> Iterator[tuple[int, str]]:
    """(offset, normalized text) of each finished sentence or line of ``text``."""
    start = 0
    for match in SENTENCE_END.finditer(text):
        raw = text[start : match.end()]
        sentence = " ".join(raw.split()).casefold()
        if len(sentence) + sum(ord(ch) >= 0x2E80 for ch in sentence) >= LOOP_UNIT_CHARS:  # CJK counts double
            yield start + len(raw) - len(raw.lstrip()), sentence
        start = match.end()


_WORD_RUN = re.compile(r"\S+")
LOOP_REPEATS = 4  # a group of words written this many times in a row, ...
LOOP_GROUP_WORDS = 12  # ... of at most this many words ...
LOOP_SPAN_CHARS = 32  # ... and this many characters in all, is a loop ("no no no no" is not)


def _phrase_loop(words: Sequence[str], end: int) -> int | None:
    """If ``words[:end]`` ends with one group of words written ``LOOP_REPEATS`` times, where its second copy starts."""
    for size in range(1, LOOP_GROUP_WORDS + 1):
        start = end - LOOP_REPEATS * size
        if start < 0:
            break
        if words[end - 1] != words[end - 1 - size]:  # cheap test first: most ends repeat nothing
            continue
        group = words[end - size : end]
        if (
            sum(map(len, group)) * LOOP_REPEATS >= LOOP_SPAN_CHARS
            and any(ch.isalpha() for word in group for ch in word)
            and all(words[start + k * size : start + (k + 1) * size] == group for k in range(LOOP_REPEATS - 1))
        ):
            while start >= size and words[start - size : start] == group:  # copies before these four
                start -= size
            return start + size
    return None


def repeats_itself(source: str) -> bool:
    """Whether ``source`` has a sentence twice or a phrase four times in a row (then its
    translation may too, and is not cut for it)."""
    seen: set[str] = set()
    for _, sentence in _sentences(source):
        if sentence in seen:
            return True
        seen.add(sentence)
    words = [word.casefold() for word in _WORD_RUN.findall(source)]
    return any(_phrase_loop(words, end) is not None for end in range(len(words), 0, -1))


def loop_start(reply: str, sentences: bool = True) -> int | None:
    """Where a reply that got stuck in a loop starts repeating itself, or None: the first sentence
    it writes a second time, or the second copy of a phrase it ends by writing again and again.
    (``sentences=False``: the phrase check only, cheap enough for every word.)"""
    if sentences:
        seen: set[str] = set()
        for offset, sentence in _sentences(reply):
            if sentence in seen:
                return offset
            seen.add(sentence)
    base = max(0, len(reply) - 1000)  # the longest loop looked for fits in the tail
    runs = list(_WORD_RUN.finditer(reply, base))
    at = _phrase_loop([run.group().casefold() for run in runs], len(runs))
    return None if at is None else runs[at].start()
