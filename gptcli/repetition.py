"""Replies that got stuck in a loop: the same sentence again, or one phrase over and over.

Small models (and sampling at low temperature) fall into loops; a reply that repeats itself is
cut where the repetition starts. ``translate`` checks each piece with it, and every generating
command stops a reply once it loops (``guard_stream``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterable, Iterator, Sequence

from gptcli.engines import Chunk, Usage
from gptcli.errors import GptcliError


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


# A reply may rightly say a sentence twice (a poem's refrain, a closing line that echoes the
# opening); a third time is a loop. (translate, which has the source to compare with, cuts at the
# second: ``loop_start``.)
GUARD_SENTENCE_TIMES = 2
LOOP_NOTICE = "the reply started repeating itself: stopped there (turn this off with --no-loop-guard)"


def guard_stream(chunks: Iterable[Chunk]) -> Iterator[Chunk]:
    """Pass a reply's chunks on until it starts repeating itself, then stop it there: at the third
    copy of a sentence or line, or at the second copy of a phrase written four times in a row.

    Text that might be the start of a repetition (a sentence that begins like an earlier one, words
    that copy the ones just before them) is held back until it is either written out or shown to be
    a loop, so what was passed on is exactly the reply as kept. A loop closes the underlying stream
    (the engine stops generating) and ends with a chunk whose usage says ``finish_reason: "loop"``.
    """
    started = time.perf_counter()
    iterator = iter(chunks)
    text = ""  # the reply so far
    sent = 0  # how much of it was passed on
    seen: dict[str, int] = {}  # finished sentences, normalized: how often each was written
    scanned = 0  # where the next unfinished sentence starts
    in_code = False  # inside a fenced code block, where a line may rightly come back (`}`, `end`, `</div>`)
    usage: Usage | None = None
    cut: int | None = None
    try:
        for chunk in iterator:
            if chunk.usage is not None:
                usage = chunk.usage
            if not chunk.text:
                continue
            text += chunk.text
            # finished sentences: the first one written a third time is where the loop starts
            for match in SENTENCE_END.finditer(text, scanned):
                if match.end() == len(text) and not match.group().endswith("\n"):
                    break  # "3." or "example." may go on ("3.5", "example.com"): wait for what follows
                raw = text[scanned : match.end()]
                sentence = " ".join(raw.split()).casefold()
                offset = scanned + len(raw) - len(raw.lstrip())
                scanned = match.end()
                if sentence.startswith(("```", "~~~")):
                    in_code = not in_code
                if in_code or len(sentence) + sum(ord(ch) >= 0x2E80 for ch in sentence) < LOOP_UNIT_CHARS:
                    continue
                seen[sentence] = seen.get(sentence, 0) + 1
                if seen[sentence] > GUARD_SENTENCE_TIMES:
                    cut = offset
                    break
            if cut is None:
                cut = loop_start(text, sentences=False)
            if cut is not None:
                break
            hold = min(_sentence_hold(text, scanned, seen), _phrase_hold(text))
            if hold > sent:
                yield Chunk(text[sent:hold], chunk.usage)
                sent = hold
    except GptcliError:  # the engine failed mid-reply (a server went away): what came is kept
        if len(text) > sent:
            yield Chunk(text[sent:], usage)
        raise
    finally:
        # a loop, or the reader stopping early (Ctrl-C): the engine stops generating the rest
        if isinstance(iterator, Generator):
            iterator.close()
    if cut is None:  # the stream ended on its own: the held-back tail is the reply's end
        if len(text) > sent:
            yield Chunk(text[sent:], usage)
        if usage is not None:
            yield Chunk("", usage)
        return
    usage = usage or Usage()
    usage.finish_reason = "loop"
    usage.total_time = max(usage.total_time, time.perf_counter() - started)
    kept = text[: max(cut, sent)].rstrip()
    if len(kept) > sent:
        yield Chunk(kept[sent:], usage)
    yield Chunk("", usage)


def _sentence_hold(text: str, scanned: int, seen: dict[str, int]) -> int:
    """Where to stop passing text on: the start of an unfinished sentence that begins like one
    already written as often as a loop allows."""
    raw = text[scanned:]
    begun = " ".join(raw.split()).casefold()
    if begun and any(count >= GUARD_SENTENCE_TIMES and sentence.startswith(begun) for sentence, count in seen.items()):
        return scanned + len(raw) - len(raw.lstrip())
    return len(text)


def _phrase_hold(text: str) -> int:
    """Where the words that copy the ones just before them start (a phrase loop in the making)."""
    base = max(0, len(text) - 1000)
    runs = list(_WORD_RUN.finditer(text, base))
    complete = runs if text[-1:].isspace() else runs[:-1]  # the last word may be unfinished
    words = [run.group().casefold() for run in complete]
    best = len(words)
    for size in range(1, LOOP_GROUP_WORDS + 1):
        at = len(words)
        while at - size - 1 >= 0 and words[at - 1] == words[at - 1 - size]:
            at -= 1
        if at < len(words) and at < best:
            best = at
    if best == len(words):
        return len(text)
    return runs[best].start()
