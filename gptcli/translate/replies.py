"""Reading a reply: matching a whole chunk's structure, preambles and echoes of the prompt, a bare piece's end."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from gptcli.engines import Message
from gptcli.translate.document import ITEM_MARKER, Unit, parse_document
from gptcli.translate.planning import Atom, DocChunk


def _translated_units(chunk: DocChunk, output: str, markdown: bool) -> list[Unit]:
    units_in = chunk.units()
    continues_table = bool(units_in) and units_in[0].kind == "row"
    blocks = parse_document(clean_output(output), markdown, in_table=continues_table, whole=False)
    return [b for b in blocks if isinstance(b, Unit)]


def _same_shape(src: Unit, out: Unit) -> bool:
    """Whether a translated unit is of the source unit's kind (and a row has its number of cells)."""
    if src.kind != out.kind:
        return False
    return src.kind != "row" or len(src.cells()) == len(out.cells())


def match_translation(chunk: DocChunk, output: str, markdown: bool = True) -> list[str] | None:
    """The atoms' translations from a packed chunk's translation, or None if its structure differs."""
    units_in = chunk.units()
    units_out = _translated_units(chunk, output, markdown)
    if len(units_in) != len(units_out):
        return None
    translations: list[str] = []
    for src, out in zip(units_in, units_out):
        if not _same_shape(src, out):
            return None
        if src.kind == "row":
            cells_out = out.cells()
            for i in src.word_cells():
                text = cells_out[i].content
                if not text:
                    return None
                translations.append(text)
        else:
            translations.append("\n".join(line.content for line in out.lines))
    return translations if len(translations) == len(chunk.atoms) else None


def could_match(chunk: DocChunk, partial: str, markdown: bool = True, echoes: Sequence[str] = ()) -> bool:
    """Whether a packed chunk's translation, as far as it has come, can still match the chunk.

    Only whole lines are judged, after any preamble line (see ``strip_preamble``): a reply that
    already has more units than the chunk, or a unit of another kind, can only end in a mismatch,
    so a model that runs on or flattens the structure is stopped there instead of at its length
    limit. A unit's kind is known at its first line (the last one may still grow, but not change
    kind), except a paragraph's whose line has a pipe: the next line may make it a table row.
    """
    whole_lines = partial[: partial.rfind("\n") + 1]
    reply = strip_preamble(whole_lines, chunk.source, echoes)
    if "\n" not in reply.strip() and is_preamble(reply, chunk.source):  # one with nothing after it yet
        return True
    units_in = chunk.units()
    units_out = _translated_units(chunk, reply, markdown)
    if len(units_out) > len(units_in):
        return False
    if units_out and units_out[-1].kind == "paragraph" and "|" in units_out[-1].lines[0].content:
        units_out = units_out[:-1]
    return all(_same_shape(src, out) for src, out in zip(units_in, units_out))



_WRAPPING_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)\n?\1\s*$", re.S)


def clean_output(text: str, source: str = "") -> str:
    """A reply without a code fence wrapped around it (unless the source was one) or outer blank lines."""
    text = text.strip()
    match = _WRAPPING_FENCE.match(text)
    if match and not _WRAPPING_FENCE.match(source.strip()):
        text = match.group(2).strip()
    return text


def _words(text: str) -> list[str]:
    return [w for w in (w.strip(".,:;!?\"'()*") for w in text.casefold().split()) if w]


@functools.lru_cache(maxsize=256)
def _joined_words(text: str) -> str:
    """``text``'s words, normalised, joined by spaces (a source or a prompt line is asked at every
    new line of a reply: normalised once)."""
    return " ".join(_words(text))


ECHO_WORDS = 5  # a reply line that begins with the first five words of a prompt line echoes it


def prompt_lines(messages: Sequence[Message]) -> tuple[str, ...]:
    """The lines of a request's instructions (rendered with an empty input) that a model may echo."""
    return tuple(line for message in messages for line in message["content"].split("\n") if len(_words(line)) >= 3)


def echoes_prompt(line: str, source: str, echoes: Sequence[str]) -> bool:
    """Whether a reply line repeats one of the prompt's lines ``echoes`` (its first words, at least
    three), which SmolLM2 writes back ("Reply with the translation only: no notes, ..."); a line
    that the source holds is no echo."""
    words = _words(line)
    if len(words) < 3:
        return False
    if " ".join(words) in _joined_words(source):
        return False
    for echo in echoes:
        start = _joined_words(echo).split()[:ECHO_WORDS]
        if len(start) >= 3 and words[: len(start)] == start:
            return True
    return False


def is_preamble(line: str, source: str, echoes: Sequence[str] = ()) -> bool:
    """Whether the first line of a reply may be one a model writes before its translation ("Voici
    la traduction :", an echo of "Translate into French:"): it ends with a colon, and the source's
    first line does not, nor is it a line of the source (only such a line with more after it is
    skipped); or it echoes a line of the prompt (see ``echoes_prompt``)."""
    if echoes_prompt(line, source, echoes):
        return True
    line = line.strip()
    first = source.strip().split("\n", 1)[0].rstrip()
    if not line.endswith((":", "：")) or first.endswith((":", "：")):
        return False
    return line not in {s.strip() for s in source.split("\n")}


def strip_preamble(reply: str, source: str, echoes: Sequence[str] = ()) -> str:
    """``reply`` without the preamble lines before its first line of translation (see
    ``is_preamble``); a line that echoes the prompt goes even with nothing after it."""
    while True:
        head, newline, rest = reply.lstrip("\r\n \t").partition("\n")
        if not (newline and rest.strip() and is_preamble(head, source)) and not echoes_prompt(head, source, echoes):
            return reply
        reply = rest


_BLANK_LINE = re.compile(r"\n[ \t]*\n")


def atom_reply_end(atom: Atom, reply: str, echoes: Sequence[str] = ()) -> int | None:
    """Where a bare atom's translation is complete in ``reply`` so far: the end of its first line
    (an atom of one line) or paragraph, after any blank or preamble lines; None until then."""
    start = 0
    while True:
        newline = reply.find("\n", start)
        if newline < 0:
            return None
        line = reply[start:newline]
        if line.strip() and not is_preamble(line, atom.text, echoes):
            break
        start = newline + 1
    if atom.single_line:
        return newline
    match = _BLANK_LINE.search(reply, start)
    return match.start() if match else None


def normalize_atom(atom: Atom, output: str, echoes: Sequence[str] = ()) -> str:
    """A bare translation made to fit its place: one line where one is needed, no blank lines, no
    preamble line or echo of the prompt, no marker the model added in front (``## ``, ``- ``,
    ``> ``) that the source did not have."""
    text = clean_output(strip_preamble(output, atom.text, echoes), atom.text)
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    if not lines:
        return ""
    if atom.single_line:
        lines = lines[:1]
    text = "\n".join(lines)
    for marker in (re.compile(r"#{1,6}[ \t]+"), ITEM_MARKER, re.compile(r">[ \t]?")):
        if marker.match(text) and not marker.match(atom.text):
            text = text[marker.match(text).end() :].strip()  # type: ignore[union-attr]
    if len(text) >= 2 and text[0] == text[-1] == '"' and not atom.text.startswith('"'):
        text = text[1:-1].strip()
    return text
