"""Document translation: split a document into chunks that fit the model, translate them, reassemble, resume."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import os
import queue
import re
import threading
import time
import tomllib
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from gptcli.repetition import SENTENCE_END, loop_start, repeats_itself
from gptcli.engines import Batching, Concurrent, Engine, Message, Sampling
from gptcli.errors import EngineError, InputError, UsageError
from gptcli.languages import Language
from gptcli.templates import Template

CACHE_VERSION = 1
EXPANSION = 1.5  # room left for the translation: this many times the source's tokens...
MARGIN = 32  # ...plus this many
DEFAULT_CHUNK_TOKENS = 384  # the most source tokens in one chunk, even when the context holds more
# (smaller chunks keep the model's attention short: on a CPU, decoding at position 1,000 is ~40 % slower than at 100)
MIN_CHUNK_TOKENS = 8

# ---------------------------------------------------------------- the document model
#
# A document is a list of blocks whose texts, joined, give back the document byte for byte.
# ``Verbatim`` blocks (blank lines, code fences, front matter, lines without words) are never
# sent to the model; a ``Unit`` (heading, paragraph, list item, table row) keeps its structure
# (markers, indentation, pipes, line endings) in its lines' prefixes and suffixes, and only its
# words (``parts``) are translated.


@dataclass(frozen=True)
class Line:
    """One source line of a unit: structure before and after the words, and its line ending."""

    prefix: str
    content: str
    suffix: str
    eol: str

    @property
    def text(self) -> str:
        return self.prefix + self.content + self.suffix + self.eol


@dataclass(frozen=True)
class Verbatim:
    """Text kept as it is. ``breaks``: a code block, front matter or HTML that ends a chunk."""

    text: str
    breaks: bool = False


@dataclass(frozen=True)
class Cell:
    before: str
    content: str
    after: str


@dataclass(frozen=True)
class Unit:
    """A structural element whose words are translated: heading, paragraph, item or row."""

    kind: str  # heading | paragraph | item | row
    lines: tuple[Line, ...]

    @property
    def text(self) -> str:
        return "".join(line.text for line in self.lines)

    def cells(self) -> list[Cell]:
        """A table row's cells (the row's content split at unescaped pipes)."""
        cells = []
        for raw in _PIPE.split(self.lines[0].content):
            stripped = raw.strip()
            if not stripped:
                cells.append(Cell(raw, "", ""))
                continue
            start = raw.index(stripped[0])
            cells.append(Cell(raw[:start], stripped, raw[start + len(stripped) :]))
        return cells

    def word_cells(self) -> list[int]:
        return [i for i, cell in enumerate(self.cells()) if has_words(cell.content)]

    def parts(self) -> list[str]:
        """The texts to translate: the unit's words, or a row's cells that have words."""
        if self.kind == "row":
            cells = self.cells()
            return [cells[i].content for i in self.word_cells()]
        return ["\n".join(line.content for line in self.lines)]

    def with_parts(self, parts: Sequence[str]) -> Unit:
        """The unit with the texts of its parts replaced, each by one of as many lines (a row's
        cells by one line without unescaped pipes), structure and line endings kept."""
        lines = list(self.lines)
        if self.kind == "row":
            cells = self.cells()
            for i, text in zip(self.word_cells(), parts):
                cells[i] = Cell(cells[i].before, text, cells[i].after)
            lines[0] = replace(lines[0], content="|".join(c.before + c.content + c.after for c in cells))
        else:
            lines = [replace(line, content=text) for line, text in zip(lines, parts[0].split("\n"))]
        return Unit(self.kind, tuple(lines))

    def rebuild(self, translations: Sequence[str]) -> str:
        """The unit with its parts replaced by ``translations``, structure and line endings kept."""
        if self.kind == "row":
            return self.with_parts([_escape_pipes(" ".join(text.split("\n"))) for text in translations]).text
        (text,) = translations
        src = self.lines
        out = text.split("\n")
        if self.kind == "heading":
            out = [" ".join(part.strip() for part in out if part.strip())]
        if len(out) == len(src):
            return self.with_parts(["\n".join(out)]).text
        more = src[1].prefix if len(src) > 1 else _continuation(src[0].prefix)
        nl = next((s.eol for s in src if s.eol), "\n")
        lines = []
        for i, words in enumerate(out):
            last = i == len(out) - 1
            prefix = src[0].prefix if i == 0 else more
            suffix = src[-1].suffix if last else ""
            lines.append(prefix + words + suffix + (src[-1].eol if last else nl))
        return "".join(lines)


Block = Verbatim | Unit


def _continuation(prefix: str) -> str:
    """The prefix of an extra line: quote markers kept, a list marker turned into spaces."""
    match = _QUOTE.match(prefix)
    quote = match.group(1) if match else ""
    rest = prefix[len(quote) :]
    return quote + (" " * len(rest) if _ITEM.match(rest) else rest)


_PIPE = re.compile(r"(?<!\\)\|")
_QUOTE = re.compile(r"((?:[ \t]{0,3}>[ \t]?)*)")
_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"([ \t]{0,3}#{1,6}[ \t]+)(.*?)((?:[ \t]+#+)?[ \t]*)$")
_ITEM = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)(?:\[[ xX]\][ \t]+)?")
_HTML = re.compile(r"[ \t]*(<!--.*|</?[A-Za-z][^>]*>)[ \t]*$")
_LINK_DEF = re.compile(r"[ \t]{0,3}\[[^\]]+\]:[ \t]*\S+")
_TABLE_SEP = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
# (?<!\S): a run of non-spaces is tried from its start only, so a 10 MB line without spaces is linear, not quadratic
_NOT_WORDS = re.compile(r"`[^`]*`|<[^>\s]*>|https?://\S+|www\.\S+|(?<!\S)\S+@\S+\.\w+")
_MARKDOWN_SIGNS = re.compile(r"^(#{1,6} |```|~~~|\|.*\||[-*+] |\d+\. |> )", re.M)
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd", ".mdx", ".rmd", ".qmd"}


def has_words(text: str) -> bool:
    """Whether ``text`` has letters outside inline code, URLs and tags (anything worth translating)."""
    return any(ch.isalpha() for ch in _NOT_WORDS.sub(" ", text))


def _escape_pipes(text: str) -> str:
    return _PIPE.sub(r"\\|", text)


def split_lines(text: str) -> list[tuple[str, str]]:
    """(body, line ending) pairs: only ``\\n`` and ``\\r\\n`` end a line; the last may have none."""
    lines = []
    for match in re.finditer(r"([^\n]*?)(\r?\n)|([^\n]+)$", text):
        if match.group(3) is not None:
            lines.append((match.group(3), ""))
        else:
            lines.append((match.group(1), match.group(2)))
    return lines


def looks_like_markdown(text: str, name: str | None = None) -> bool:
    """Markdown by file suffix, else by its signs (headings, fences, tables, lists)."""
    if name:
        suffix = Path(name).suffix.lower()
        if suffix in MARKDOWN_SUFFIXES:
            return True
        if suffix in {".txt", ".text"}:
            return False
    return len(_MARKDOWN_SIGNS.findall(text[:20000])) >= 2


def parse_document(text: str, markdown: bool = True, *, in_table: bool = False, whole: bool = True) -> list[Block]:
    """Split a document into blocks; ``"".join(b.text for b in blocks) == text`` always holds.

    ``whole=False`` parses a chunk's translation: no front matter or indented code (a chunk has
    none), and ``in_table`` says it continues a table (rows without outer pipes are rows).
    """
    lines = split_lines(text)
    blocks: list[Block] = []
    i = 0
    n = len(lines)

    def body(k: int) -> str:
        return lines[k][0]

    def raw(a: int, b: int) -> str:
        return "".join(lines[k][0] + lines[k][1] for k in range(a, b))

    def quote_of(k: int) -> tuple[str, str]:
        line = body(k)
        q = _QUOTE.match(line)
        quote = q.group(1) if q else ""
        return quote, line[len(quote) :]

    def is_separator(k: int) -> bool:
        rest = quote_of(k)[1] if 0 <= k < n else ""
        return bool(_TABLE_SEP.match(rest) and "-" in rest and "|" in rest)

    def is_row(k: int, in_table: bool = False) -> bool:
        _, rest = quote_of(k)
        if not _PIPE.search(rest) or is_separator(k):
            return False
        return in_table or rest.lstrip().startswith("|") or is_separator(k + 1)

    def starts_block(k: int) -> bool:
        """Whether line ``k`` cannot continue a paragraph or list item."""
        quote, rest = quote_of(k)
        if not rest.strip() or not has_words(rest):
            return True
        if _ITEM.match(rest):
            return True
        if markdown and (
            _FENCE.match(rest) or _HEADING.match(rest) or _HTML.match(rest) or is_row(k) or _LINK_DEF.match(rest)
        ):
            return True
        return False

    def first(start: int, found: Callable[[int], bool]) -> int:
        """The first line from ``start`` on where ``found`` holds (``n`` if none)."""
        return next((k for k in range(start, n) if found(k)), n)

    def verbatim_end(k: int, quote: str, rest: str, after_blank: bool, in_list: bool) -> int | None:
        """Where a block kept as it is (code, a comment, HTML) that starts at line ``k`` ends; None if none starts there."""
        fence = _FENCE.match(rest)
        if fence:
            mark = fence.group(1)

            def closes(j: int) -> bool:
                closing = quote_of(j)[1].strip()
                return closing.startswith(mark[0] * len(mark)) and set(closing) == {mark[0]}

            return min(first(k + 1, closes) + 1, n)
        if whole and not quote and after_blank and not in_list and rest.startswith(("    ", "\t")):
            return first(k, lambda j: not body(j).startswith(("    ", "\t")))
        if rest.lstrip().startswith("<!--"):
            return min(first(k, lambda j: "-->" in body(j)) + 1, n)
        if _HTML.match(rest):
            return k + 1
        return None

    def line_of(k: int, prefix_len: int) -> Line:
        line, eol = lines[k]
        content = line[prefix_len:]
        stripped = content.rstrip()
        lead = len(content) - len(content.lstrip())
        return Line(line[: prefix_len + lead], stripped[lead:], content[len(stripped) :], eol)

    # front matter: YAML (---) or TOML (+++) at the very start, kept when it is closed
    if markdown and whole and n and body(0).rstrip() in ("---", "+++"):
        opener = body(0).rstrip()
        closers = ("---", "...") if opener == "---" else ("+++",)
        for k in range(1, n):
            if body(k).rstrip() in closers:
                blocks.append(Verbatim(raw(0, k + 1), breaks=True))
                i = k + 1
                break

    last_was_blank = True
    in_list = False
    while i < n:
        quote, rest = quote_of(i)
        was_table, in_table = in_table, False
        if rest.strip() and not body(i).startswith((" ", "\t")) and not _ITEM.match(rest):
            in_list = False
        # blank lines, and lines with no words (rules, separators, numbers, pure code or URLs)
        if not rest.strip():
            blocks.append(Verbatim(raw(i, i + 1)))
            i += 1
            last_was_blank = True
            continue
        if markdown and (end := verbatim_end(i, quote, rest, last_was_blank, in_list)) is not None:
            blocks.append(Verbatim(raw(i, end), breaks=True))
            i = end
            last_was_blank = False
            continue
        last_was_blank = False
        if not has_words(rest) or (markdown and _LINK_DEF.match(rest)):
            blocks.append(Verbatim(raw(i, i + 1)))
            in_table = markdown and (is_separator(i) or was_table and bool(_PIPE.search(rest)))
            i += 1
            continue
        if markdown:
            heading = _HEADING.match(rest)
            if heading:
                line, eol = lines[i]
                prefix = quote + heading.group(1)
                blocks.append(Unit("heading", (Line(prefix, heading.group(2), heading.group(3), eol),)))
                i += 1
                in_list = False
                continue
            if is_row(i, was_table):
                in_table = True
                line, eol = lines[i]
                stripped = rest.strip()
                lead = quote + rest[: len(rest) - len(rest.lstrip())]
                if stripped.startswith("|"):
                    lead += "|"
                    stripped = stripped[1:]
                tail_ws = rest[len(rest.rstrip()) :]
                trail = ""
                if stripped.endswith("|") and not stripped.endswith("\\|"):
                    trail = "|"
                    stripped = stripped[:-1]
                trail += tail_ws
                start = len(lead)
                content = line[start : len(line) - len(trail)]
                blocks.append(Unit("row", (Line(lead, content, trail, eol),)))
                i += 1
                continue
        item = _ITEM.match(rest)
        if item:
            in_list = True
            group = [line_of(i, len(quote) + item.end())]
            k = i + 1
            while k < n and not starts_block(k) and quote_of(k)[0] == quote:
                group.append(line_of(k, len(quote)))
                k += 1
            blocks.append(Unit("item", tuple(group)))
            i = k
            continue
        group = [line_of(i, len(quote))]
        k = i + 1
        while k < n and not starts_block(k) and quote_of(k)[0] == quote:
            group.append(line_of(k, len(quote)))
            k += 1
        blocks.append(Unit("paragraph", tuple(group)))
        i = k
    return blocks


# ---------------------------------------------------------------- chunks


class TokenCounter(Protocol):
    def __call__(self, text: str) -> int: ...


@dataclass(frozen=True)
class Atom:
    """One text the model translates: a unit's part, or a sentence-group piece of an over-long part."""

    block: int  # index of the unit in the document's blocks
    part: int
    piece: int
    pieces: int  # how many pieces the part was cut into
    text: str
    sep: str  # the source's whitespace after this piece (between it and the next)
    single_line: bool
    kind: str


@dataclass
class Chunk:
    """One trip to the model: either whole units (sent as Markdown) or a single atom (sent bare)."""

    index: int
    atoms: list[Atom]
    blocks: list[Block] = field(default_factory=list)  # the units and verbatim blocks between them
    source_tokens: int = 0

    @property
    def packed(self) -> bool:
        return len(self.atoms) > 1

    @property
    def source(self) -> str:
        """What is sent: the Markdown of the units, or the bare text of the single atom."""
        if not self.packed:
            return self.atoms[0].text
        text = "".join(b.text for b in self.blocks).replace("\r\n", "\n")
        text = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text)
        return re.sub(r"(?m)^[ \t]+$", "", text).strip("\n")

    def units(self) -> list[Unit]:
        return [b for b in self.blocks if isinstance(b, Unit)]


@dataclass
class Plan:
    """A parsed document and its chunks, in order."""

    blocks: list[Block]
    chunks: list[Chunk]
    markdown: bool

    @property
    def source_tokens(self) -> int:
        return sum(c.source_tokens for c in self.chunks)


_SENTENCE = re.compile(r"[.!?…]+[\"'”’»)\]]*(\s+)|[。！？]+[」』”’)]*(\s*)")
_CLAUSE = re.compile(r"[,;:，；：、]+(\s*)")
_WORD = re.compile(r"(?<!\S)\S+(\s+)")  # from a word's start only: linear on a line without spaces


def _split_at(text: str, pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """(segment, whitespace after it) pairs, cut after each match of ``pattern``."""
    out = []
    pos = 0
    for match in pattern.finditer(text):
        ws = match.group(match.lastindex or 0) if match.lastindex else ""
        ws = ws or ""
        end = match.end() - len(ws)
        if end <= pos or match.end() >= len(text):
            continue
        out.append((text[pos:end], ws))
        pos = match.end()
    out.append((text[pos:], ""))
    return [(seg, ws) for seg, ws in out if seg or ws]


def split_long_text(text: str, limit: int, count: TokenCounter) -> list[tuple[str, str]]:
    """Cut ``text`` into (piece, whitespace after) of at most ``limit`` tokens: at sentences,
    then clauses, then words, then characters. Joining pieces and their whitespace gives ``text``."""
    counted: dict[str, int] = {}
    uncached = count

    def count(part: str) -> int:  # a part is measured at several levels: tokenize it once
        if part not in counted:
            counted[part] = uncached(part)
        return counted[part]

    def segments(part: str, level: int) -> list[tuple[str, str]]:
        if count(part) <= limit:
            return [(part, "")]
        if level == 3:  # no boundary left: cut by characters
            size = max(1, len(part) * limit // max(1, count(part)))
            return [(part[k : k + size], "") for k in range(0, len(part), size)]
        pattern = (_SENTENCE, _CLAUSE, _WORD)[level]
        pieces = _split_at(part, pattern)
        if len(pieces) == 1:
            return segments(part, level + 1)
        out: list[tuple[str, str]] = []
        for seg, ws in pieces:
            sub = segments(seg, level + 1) if count(seg) > limit else [(seg, "")]
            sub[-1] = (sub[-1][0], sub[-1][1] + ws)
            out.extend(sub)
        return out

    # greedy: consecutive segments share a piece while they fit
    pieces: list[tuple[str, str]] = []
    current, current_ws, used = "", "", 0
    for seg, ws in segments(text, 0):
        cost = count(seg) + 1
        if current and used + cost > limit:
            pieces.append((current, current_ws))
            current, current_ws, used = "", "", 0
        current += current_ws + seg
        current_ws = ws
        used += cost
    if current or current_ws:
        pieces.append((current, current_ws))
    # whitespace that leads a piece belongs to the previous separator
    fixed: list[tuple[str, str]] = []
    for piece, ws in pieces:
        lead = piece[: len(piece) - len(piece.lstrip())]
        if lead and fixed:
            fixed[-1] = (fixed[-1][0], fixed[-1][1] + lead)
            piece = piece[len(lead) :]
        fixed.append((piece, ws))
    return fixed


def plan_document(
    text: str,
    count: TokenCounter,
    chunk_tokens: int,
    *,
    markdown: bool = True,
) -> Plan:
    """Parse ``text`` and group its units into chunks of at most ``chunk_tokens`` source tokens.

    A heading starts a new chunk and a code block, front matter or HTML ends one, so that an edit
    moves chunk boundaries only inside its own section (the resume cache keeps the rest). A unit
    too long for one chunk is cut into parts (table cells) and pieces (sentences), one chunk each.
    """
    if chunk_tokens < MIN_CHUNK_TOKENS:
        raise UsageError(f"chunks of {chunk_tokens} tokens are too small to translate; use a larger --ctx")
    blocks = parse_document(text, markdown)
    chunks: list[Chunk] = []
    current: Chunk | None = None
    pending: list[Block] = []  # verbatim blocks after the current chunk's last unit

    def close() -> None:
        nonlocal current
        if current is not None:
            for after in pending:  # lines right after the last unit (a table's separator) give context
                if not after.text.strip():
                    break
                current.blocks.append(after)
            chunks.append(current)
        current = None

    def atoms_of(index: int, unit: Unit) -> list[Atom]:
        parts = unit.parts()
        return [
            Atom(index, p, 0, 1, part, "", unit.kind in ("heading", "row") or "\n" not in part, unit.kind)
            for p, part in enumerate(parts)
        ]

    for index, block in enumerate(blocks):
        if isinstance(block, Verbatim):
            if block.breaks:
                close()
                pending.clear()
            elif current is not None:
                pending.append(block)
            continue
        if not block.parts():  # no words to translate: written as it is
            if current is not None:
                pending.append(block)
            continue
        cost = count(block.text.replace("\r\n", "\n")) + 1
        if block.kind == "heading":
            close()
        if current is not None and current.source_tokens + cost <= chunk_tokens:
            current.blocks.extend(pending)
            current.blocks.append(block)
            current.atoms.extend(atoms_of(index, block))
            current.source_tokens += cost
            pending.clear()
            continue
        close()
        pending.clear()
        if cost <= chunk_tokens:
            current = Chunk(len(chunks), atoms_of(index, block), [block], cost)
            continue
        # too long for one chunk: each part alone, and a part too long in pieces
        for atom in atoms_of(index, block):
            pieces = split_long_text(atom.text, chunk_tokens, count)
            for k, (piece, ws) in enumerate(pieces):
                single = atom.single_line or "\n" not in piece
                part = Atom(index, atom.part, k, len(pieces), piece, ws, single, atom.kind)
                chunks.append(Chunk(len(chunks), [part], [block], count(piece)))
    close()
    for k, chunk in enumerate(chunks):
        chunk.index = k
    return Plan(blocks, chunks, markdown)


def _translated_units(chunk: Chunk, output: str, markdown: bool) -> list[Unit]:
    units_in = chunk.units()
    continues_table = bool(units_in) and units_in[0].kind == "row"
    blocks = parse_document(clean_output(output), markdown, in_table=continues_table, whole=False)
    return [b for b in blocks if isinstance(b, Unit)]


def _same_shape(src: Unit, out: Unit) -> bool:
    """Whether a translated unit is of the source unit's kind (and a row has its number of cells)."""
    if src.kind != out.kind:
        return False
    return src.kind != "row" or len(src.cells()) == len(out.cells())


def match_translation(chunk: Chunk, output: str, markdown: bool = True) -> list[str] | None:
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


def could_match(chunk: Chunk, partial: str, markdown: bool = True, echoes: Sequence[str] = ()) -> bool:
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


# what the model must not change: inline code, a link's target (``[text](target)``), a URL
_SPAN = re.compile(r"`[^`\n]+`|(?<=\]\()[^()\s]+(?=\))|https?://[^\s<>()\[\]`]*[^\s<>()\[\]`.,;:!?'\"]")
_PLACEHOLDER = re.compile(r"\{[ \t]*(\d{1,4})[ \t]*\}")
_PLACEHOLDER_START = re.compile(r"\{[ \t]*\d{0,4}[ \t]*$")  # the start of one, still being written


def lost_spans(source: str, translation: str) -> list[str]:
    """The inline code spans, link targets and URLs of ``source`` that ``translation`` does not
    hold as they are."""
    missing = Counter(_SPAN.findall(source))
    missing.subtract(_SPAN.findall(translation))
    return [span for span, count in missing.items() if count > 0]


def protect_spans(chunk: Chunk) -> tuple[Chunk, list[str]]:
    """``chunk`` with its inline code, link targets and URLs replaced by placeholders ``{1}``,
    ``{2}``..., and the spans they stand for (``restore_spans`` puts them back).

    The model then has nothing in them to translate or get wrong, and fewer tokens to read and
    write (a URL is a dozen tokens, its placeholder three). The same span is the same placeholder.
    A chunk whose words already hold something like a placeholder (outside code: `"{0}".format`
    is masked as any code), or with a line that would be left without words ("[](docs)"), is
    left as it is."""
    if not _SPAN.search(chunk.source) or any(_PLACEHOLDER.search(_SPAN.sub(" ", atom.text)) for atom in chunk.atoms):
        return chunk, []
    numbers: dict[str, int] = {}

    def number(match: re.Match[str]) -> str:
        return "{%d}" % numbers.setdefault(match.group(0), len(numbers) + 1)

    atoms = [replace(atom, text=_SPAN.sub(number, atom.text)) for atom in chunk.atoms]
    if not numbers or not all(_same_wordy_lines(a.text, b.text) for a, b in zip(chunk.atoms, atoms)):
        return chunk, []
    blocks = chunk.blocks
    if chunk.packed:  # what is sent is the units' Markdown: each unit gets its parts' new text
        parts = iter(atom.text for atom in atoms)
        blocks = [b.with_parts([next(parts) for _ in b.parts()]) if isinstance(b, Unit) else b for b in blocks]
    return Chunk(chunk.index, atoms, blocks, chunk.source_tokens), list(numbers)


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


class _Restoring:
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

    def chunk_done(self, chunk: Chunk, result: ChunkResult) -> None:
        self.events.chunk_done(chunk, result)


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
    for marker in (re.compile(r"#{1,6}[ \t]+"), _ITEM, re.compile(r">[ \t]?")):
        if marker.match(text) and not marker.match(atom.text):
            text = text[marker.match(text).end() :].strip()  # type: ignore[union-attr]
    if len(text) >= 2 and text[0] == text[-1] == '"' and not atom.text.startswith('"'):
        text = text[1:-1].strip()
    return text


# ---------------------------------------------------------------- reassembly


class Assembler:
    """Receives chunk translations in any order and releases the document's text in order."""

    def __init__(self, plan: Plan, spaceless_target: bool = False) -> None:
        self.blocks = plan.blocks
        self.next_block = 0
        self.spaceless = spaceless_target
        self.needed: dict[int, list[list[int]]] = {}  # unit index -> pieces per part
        for chunk in plan.chunks:
            for atom in chunk.atoms:
                parts = self.needed.setdefault(atom.block, [])
                while len(parts) <= atom.part:
                    parts.append([])
                parts[atom.part] = [0] * atom.pieces
        self.done: dict[int, dict[tuple[int, int], tuple[str, str]]] = {}

    def add(self, chunk: Chunk, translations: Sequence[str]) -> None:
        for atom, text in zip(chunk.atoms, translations):
            self.done.setdefault(atom.block, {})[(atom.part, atom.piece)] = (text, atom.sep)

    def _ready(self, index: int) -> bool:
        have = self.done.get(index, {})
        return all((p, k) in have for p, pieces in enumerate(self.needed.get(index, [])) for k in range(len(pieces)))

    def drain(self) -> str:
        """The text of every block that can be written now, in document order."""
        out: list[str] = []
        while self.next_block < len(self.blocks):
            block = self.blocks[self.next_block]
            if isinstance(block, Unit):
                if not self.needed.get(self.next_block):
                    out.append(block.text)  # nothing to translate in it
                elif not self._ready(self.next_block):
                    break
                else:
                    have = self.done.pop(self.next_block)
                    parts = []
                    for p, pieces in enumerate(self.needed.pop(self.next_block)):
                        text = ""
                        for k in range(len(pieces)):
                            piece, sep = have[(p, k)]
                            if k < len(pieces) - 1 and self.spaceless and sep.strip(" ") == "":
                                sep = ""
                            text += piece + (sep if k < len(pieces) - 1 else "")
                        parts.append(text)
                    out.append(block.rebuild(parts))
            else:
                out.append(block.text)
            self.next_block += 1
        return "".join(out)


# ---------------------------------------------------------------- glossary


@dataclass(frozen=True)
class Glossary:
    """Term pairs the translation must use."""

    terms: tuple[tuple[str, str], ...] = ()

    def relevant(self, text: str) -> list[tuple[str, str]]:
        """The pairs whose source term appears in ``text`` (whole words, any case)."""
        found = []
        for term, target in self.terms:
            if re.match(r"\w", term[0]) and term[0].isascii() and term[-1].isascii():
                hit = re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.I)
            else:
                hit = term.casefold() in text.casefold()
            if hit:
                found.append((term, target))
        return found

    @staticmethod
    def render(pairs: Sequence[tuple[str, str]]) -> str:
        if not pairs:
            return ""
        lines = "\n".join(f"- {term} => {target}" for term, target in pairs)
        return f"Use exactly these translations for these terms:\n{lines}"


def load_glossary(path: str | Path) -> Glossary:
    """Term pairs from a CSV/TSV file (``term,translation`` rows) or a TOML file (``term = "translation"``)."""
    from gptcli.textio import read_text

    p = Path(path)
    text = read_text(p)
    pairs: list[tuple[str, str]] = []
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"glossary {p}: {exc}") from None
        if isinstance(data.get("term"), list):  # [[term]] source = ..., target = ...
            for entry in data["term"]:
                if not isinstance(entry, dict) or not isinstance(entry.get("source"), str) or not isinstance(entry.get("target"), str):
                    raise InputError(f"glossary {p}: each [[term]] needs source and target strings")
                pairs.append((entry["source"].strip(), entry["target"].strip()))
        else:  # term = "translation", at the top or in a [terms] table
            table = data["terms"] if isinstance(data.get("terms"), dict) else data
            for key, value in table.items():
                if not isinstance(value, str):
                    raise InputError(f"glossary {p}: the translation of '{key}' must be a string")
                pairs.append((key.strip(), value.strip()))
    else:
        delimiter = "\t" if p.suffix.lower() == ".tsv" or ("\t" in text and "," not in text) else ","
        reader = csv.reader(io.StringIO(text), delimiter=delimiter)
        for number, row in enumerate(reader, 1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise InputError(f"glossary {p}, line {number}: expected two columns: term{delimiter}translation")
            if number == 1 and row[0].strip().lower() in ("term", "source", "source term") and row[1].strip().lower() in (
                "translation", "target", "target term",
            ):
                continue
            pairs.append((row[0].strip(), row[1].strip()))
    pairs = [(a, b) for a, b in pairs if a and b]
    if not pairs:
        raise InputError(f"glossary {p} has no term pairs")
    return Glossary(tuple(sorted(dict(pairs).items(), key=lambda kv: (-len(kv[0]), kv[0]))))


# ---------------------------------------------------------------- the resume cache


class TranslationCache:
    """Finished chunks, appended to a JSON-lines file as they complete (one file per job settings).

    Each line is ``{"k": chunk key, "t": [translations]}``, written with one ``write`` and fsynced;
    a line cut short by a crash is skipped when the file is read back.
    """

    def __init__(self, folder: Path, job_key: str) -> None:
        from gptcli.config import ensure_private_dir

        try:
            ensure_private_dir(folder)
        except OSError as exc:
            raise InputError(f"cannot create the translation cache folder {folder}: {exc.strerror or exc}") from None
        self.path = folder / f"{job_key[:32]}.jsonl"
        self.entries: dict[str, list[str]] = {}
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                        if isinstance(entry, dict) and isinstance(entry.get("k"), str) and isinstance(entry.get("t"), list):
                            self.entries[entry["k"]] = [str(t) for t in entry["t"]]
                    except ValueError:
                        continue
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise InputError(f"cannot read the translation cache {self.path}: {exc.strerror}") from None
        self.fd: int | None = None
        self.write_error: str | None = None

    def get(self, key: str, atoms: int) -> list[str] | None:
        found = self.entries.get(key)
        return found if found is not None and len(found) == atoms else None

    def put(self, key: str, translations: Sequence[str]) -> None:
        """Keep a finished chunk; a cache that cannot be written (a full disk) is only a warning.

        The translation itself goes elsewhere, so it goes on: the first failure is kept in
        ``write_error`` for the command to report, and the cache stops trying.
        """
        self.entries[key] = list(translations)
        if self.write_error is not None:
            return
        line = json.dumps({"k": key, "t": list(translations)}, ensure_ascii=False) + "\n"
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self.fd, line.encode("utf-8"))
            os.fsync(self.fd)
        except OSError as exc:
            self.write_error = f"cannot write the translation cache {self.path}: {exc.strerror or exc}"
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def cache_folder() -> Path:
    from gptcli.config import data_dir

    return data_dir() / "translations"


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------- the translator


@dataclass
class Job:
    """What to translate into what, and how: the same job settings share cached chunks."""

    target: Language
    source: Language
    template: Template
    values: dict[str, str]  # template variables other than the glossary
    glossary: Glossary
    sampling: Sampling
    model: str  # what identifies the model for the cache
    max_tokens: int | None = None  # a user's per-chunk limit (-n)

    @property
    def key(self) -> str:
        t = self.template
        return _digest(
            CACHE_VERSION,
            self.model,
            t.system,
            t.user,
            [dict(e) for e in t.examples],
            self.values,
            [self.sampling.temperature, self.sampling.top_p, self.sampling.top_k, self.sampling.min_p,
             self.sampling.repeat_penalty, self.sampling.seed, self.max_tokens],
        )

    def messages(self, text: str) -> list[Message]:
        values = dict(self.values)
        if any(v.name == "glossary" for v in self.template.variables):
            values["glossary"] = Glossary.render(self.glossary.relevant(text))
        return self.template.render(text, values)

    def chunk_key(self, chunk: Chunk) -> str:
        kind = "packed" if chunk.packed else ("line" if chunk.atoms[0].single_line else "text")
        return _digest(self.key, kind, chunk.source, self.glossary.relevant(chunk.source))


@dataclass
class ChunkResult:
    index: int
    translations: list[str]
    cached: bool = False
    packed: bool = False  # translated in one trip with its structure intact
    fell_back: bool = False  # a packed chunk whose structure the model changed: its parts went one by one
    kept_source: int = 0  # parts the model returned nothing for, kept untranslated
    truncated: int = 0  # replies cut at the length limit
    looped: int = 0  # replies stopped where they began repeating themselves
    spans_lost: int = 0  # parts whose translation lacks an inline code span or a link of the source
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    glossary_misses: list[str] = field(default_factory=list)

    def add_reads(self, other: ChunkResult) -> None:
        """Add the counts ``_read`` made in ``other`` (for a reply read on another thread) to these."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.truncated += other.truncated
        self.looped += other.looped


@dataclass
class Summary:
    """What a translation did, for the closing notice and --json."""

    chunks: int = 0
    cached: int = 0
    packed: int = 0
    fell_back: int = 0
    kept_source: int = 0
    truncated: int = 0
    looped: int = 0
    spans_lost: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    glossary_misses: Counter[str] = field(default_factory=Counter)

    def add(self, result: ChunkResult) -> None:
        self.chunks += 1
        self.cached += result.cached
        self.packed += result.packed
        self.fell_back += result.fell_back
        self.kept_source += result.kept_source
        self.truncated += result.truncated
        self.looped += result.looped
        self.spans_lost += result.spans_lost
        self.prompt_tokens += result.prompt_tokens
        self.completion_tokens += result.completion_tokens
        self.glossary_misses.update(result.glossary_misses)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


class Events(Protocol):
    """What a display hears about; ``token`` and ``attempt`` come only when chunks run one at a time."""

    def start(self, plan: Plan, cached: int) -> None: ...

    def attempt(self, index: int) -> None: ...

    def token(self, index: int, text: str) -> None: ...

    def chunk_done(self, chunk: Chunk, result: ChunkResult) -> None: ...


class _Cancelled(Exception):
    pass


def _close(stream: Iterator[Chunk]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


class Translator:
    """Translates a plan's chunks through an engine, ``parallel`` at a time, writing in order."""

    def __init__(
        self,
        engine: Engine,
        job: Job,
        *,
        cache: TranslationCache | None = None,
        resume: bool = True,
        parallel: int = 1,
    ) -> None:
        self.engine = engine
        self.job = job
        self.cache = cache
        self.resume = resume
        self.parallel = max(1, parallel)
        self.cancel = threading.Event()
        self.overhead = 0
        self.echoes = prompt_lines(job.messages(""))  # lines of the instructions a reply may repeat
        # a model that keeps breaking packed chunks gets its parts one by one from then on; until
        # one packed chunk has come back whole, only one is tried at a time (chunks in parallel
        # would otherwise all be tried, and all be translated twice, by a model that cannot)
        self.packed_ok = 0
        self.packed_failed = 0
        self.packed_trying = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ planning

    def prompt_overhead(self, glossary_text: str = "") -> int:
        """Tokens the template takes around an empty input (with the glossary terms ``glossary_text`` needs)."""
        values = dict(self.job.values)
        if any(v.name == "glossary" for v in self.job.template.variables):
            values["glossary"] = Glossary.render(self.job.glossary.relevant(glossary_text))
        return self.engine.count_tokens(self.job.template.render("", values))

    def chunk_budget(self, text: str, limit: int | None = None) -> int:
        """The most source tokens a chunk may hold so prompt, chunk and translation fit the context."""
        self.overhead = self.prompt_overhead(text)
        room = self.engine.context_length - self.overhead - MARGIN
        budget = int(room / (1 + EXPANSION))
        if budget < MIN_CHUNK_TOKENS:
            raise UsageError(
                f"the context window ({self.engine.context_length} tokens) leaves no room to translate:"
                f" the prompt alone takes {self.overhead}; use a larger --ctx"
            )
        return min(budget, limit or DEFAULT_CHUNK_TOKENS)

    def plan(self, text: str, *, markdown: bool, chunk_tokens: int | None = None) -> Plan:
        budget = self.chunk_budget(text, chunk_tokens)
        return plan_document(text, self.engine.tokenize_count, budget, markdown=markdown)

    # ------------------------------------------------------------ one trip

    def _max_tokens(self, source_tokens: int) -> int:
        room = self.engine.context_length - self.overhead - source_tokens - 8
        limit = int(source_tokens * 3) + 32
        if self.job.max_tokens:
            limit = self.job.max_tokens
        return max(1, min(room, limit))

    def _open(self, engine: Engine, text: str, source_tokens: int, result: ChunkResult, events: Events | None) -> Iterator[Chunk]:
        """Send one request; its reply is read with ``_read`` (a batched engine starts on it at once).

        No stop string: where a reply ends is the reader's call (``_read``'s ``until``), since a
        bare piece ends at its first line or paragraph only after any preamble a small model writes."""
        sampling = replace(self.job.sampling, max_tokens=self._max_tokens(source_tokens), stop=(), ignore_eos=False)
        if events is not None:
            events.attempt(result.index)
        return iter(engine.stream(self.job.messages(text), sampling))

    def _read(
        self,
        stream: Iterator[Chunk],
        result: ChunkResult,
        events: Events | None,
        source: str,
        watch: Callable[[str], bool] | None = None,
        until: Callable[[str], int | None] | None = None,
    ) -> str | None:
        """A reply's text, its usage added to ``result``; None if ``watch`` (asked at each new line)
        gave up on it. ``until`` (asked at each new line too) says where the reply is complete:
        it is read no further, and cut there.

        A reply stuck in a loop (see ``loop_start``; unless ``source`` repeats itself that way) is
        stopped there and cut before the repetition: it would write on to its length limit.
        """
        text = ""
        usage = None
        given_up = cut = False
        guard = not repeats_itself(source)
        try:
            for piece in stream:
                if self.cancel.is_set():
                    raise _Cancelled
                usage = piece.usage or usage  # every piece carries the reply's usage so far
                if not piece.text:
                    continue
                text += piece.text
                if events is not None:
                    events.token(result.index, piece.text)
                if guard:  # at each sentence's end, and at each word's (most tokens begin with a space)
                    ends_sentence = bool(SENTENCE_END.search(piece.text))
                    if ends_sentence or piece.text[:1].isspace() or piece.text[-1:].isspace():
                        if (at := loop_start(text, sentences=ends_sentence)) is not None:
                            text, cut = text[:at].rstrip(), True
                            break
                if "\n" not in piece.text:
                    continue
                if watch is not None and not watch(text):
                    given_up = True
                    break
                if until is not None and (end := until(text)) is not None:
                    text = text[:end]
                    break
        finally:
            _close(stream)
        if usage is not None:
            result.prompt_tokens += usage.prompt_tokens
            result.completion_tokens += usage.completion_tokens
            if usage.finish_reason in ("length", "context") and not (given_up or cut):
                result.truncated += 1
        result.looped += cut
        return None if given_up else text

    def _open_atom(self, engine: Engine, atom: Atom, result: ChunkResult, events: Events | None) -> Iterator[Chunk]:
        return self._open(engine, atom.text, engine.tokenize_count(atom.text), result, events)

    def _read_atom(self, stream: Iterator[Chunk], atom: Atom, result: ChunkResult, events: Events | None) -> str:
        return self._read(stream, result, events, atom.text, until=lambda reply: atom_reply_end(atom, reply, self.echoes)) or ""

    def _finish_atom(self, engine: Engine, atom: Atom, output: str, result: ChunkResult, events: Events | None) -> str:
        text = normalize_atom(atom, output, self.echoes)
        if not text:  # nothing came (an end of text at once, blank lines): once more, read to its end
            stream = self._open_atom(engine, atom, result, events)
            text = normalize_atom(atom, self._read(stream, result, events, atom.text) or "", self.echoes)
        if not text:
            result.kept_source += 1
            return atom.text
        return text

    def _translate_atoms(self, engine: Engine, atoms: Sequence[Atom], result: ChunkResult, events: Events | None) -> list[str]:
        """Each atom's translation. An engine that decodes several replies at once gets them all
        together, so that one chunk's paragraphs fill its sequences, each reply read by a thread of
        its own (so that each is stopped as soon as it is complete); others get them one by one."""
        outputs: Iterable[str]
        if isinstance(engine, Concurrent) and len(atoms) > 1:
            outputs = self._read_together(engine, atoms, result)
        else:  # one at a time: each request is sent when the one before it (and its retry) is done
            outputs = (self._read_atom(self._open_atom(engine, atom, result, events), atom, result, events) for atom in atoms)
        return [self._finish_atom(engine, atom, output, result, events) for atom, output in zip(atoms, outputs)]

    def _read_together(self, engine: Engine, atoms: Sequence[Atom], result: ChunkResult) -> list[str]:
        parts = [ChunkResult(result.index, []) for _ in atoms]  # each reader counts on its own
        streams: list[Iterator[Chunk]] = []
        futures: list[Future[str]] = []
        pool = ThreadPoolExecutor(len(atoms), thread_name_prefix="translate-piece")
        try:
            streams.extend(self._open_atom(engine, atom, part, None) for atom, part in zip(atoms, parts))
            futures.extend(pool.submit(self._read_atom, *job, None) for job in zip(streams, atoms, parts))
            return [future.result() for future in futures]
        finally:
            if not all(future.done() for future in futures):  # one failed: stop the others' replies
                for stream in streams:
                    with contextlib.suppress(ValueError):  # a generator its reader is running
                        _close(stream)
            pool.shutdown(wait=True)
            for stream in streams:  # replies never read (an error while sending) are cancelled
                _close(stream)
            for part in parts:
                result.add_reads(part)

    def translate_chunk(
        self, chunk: Chunk, events: Events | None = None, markdown: bool = True, engine: Engine | None = None
    ) -> ChunkResult:
        """Translate one chunk: whole when packed (its structure checked), else atom by atom.

        Its inline code, link targets and URLs go to the model as placeholders (``protect_spans``)
        and come back as they were; a piece whose reply lost one is counted in ``spans_lost``."""
        engine = engine or self.engine
        started = time.perf_counter()
        sent, spans = protect_spans(chunk)
        if spans and sent.packed:  # the room for a whole chunk's reply is measured by what is sent
            sent.source_tokens = engine.tokenize_count(sent.source)  # (a bare atom's is counted as it goes)
        if spans and events is not None:
            events = _Restoring(events, spans)
        result = self._translate(sent, events, markdown, engine)
        result.translations = [restore_spans(text, spans) for text in result.translations]
        result.seconds = time.perf_counter() - started
        result.glossary_misses = self._glossary_misses(chunk, result.translations)
        result.spans_lost = sum(bool(lost_spans(atom.text, text)) for atom, text in zip(chunk.atoms, result.translations))
        return result

    def _translate(self, chunk: Chunk, events: Events | None, markdown: bool, engine: Engine) -> ChunkResult:
        result = ChunkResult(chunk.index, [])
        translations: list[str] | None = None
        if chunk.packed and self._try_packed():
            try:
                stream = self._open(engine, chunk.source, chunk.source_tokens, result, events)
                output = self._read(stream, result, events, chunk.source, lambda partial: could_match(chunk, partial, markdown, self.echoes))
                translations = None if output is None else match_translation(chunk, strip_preamble(output, chunk.source, self.echoes), markdown)
            finally:
                with self._lock:
                    self.packed_trying -= 1
            with self._lock:
                if translations is None:
                    self.packed_failed += 1
                else:
                    self.packed_ok += 1
            result.packed = translations is not None
            result.fell_back = translations is None
        if translations is None:
            translations = self._translate_atoms(engine, chunk.atoms, result, events)
        result.translations = translations
        return result

    def _try_packed(self) -> bool:
        """Whether to send a packed chunk whole (and count it as being tried) or its parts one by one."""
        with self._lock:
            if self.packed_failed >= 2 and self.packed_failed > self.packed_ok:
                return False
            if not self.packed_ok and self.packed_trying:
                return False
            self.packed_trying += 1
            return True

    def _glossary_misses(self, chunk: Chunk, translations: Sequence[str]) -> list[str]:
        pairs = self.job.glossary.relevant(chunk.source)
        joined = "\n".join(translations).casefold()
        return [term for term, target in pairs if target.casefold() not in joined]

    # ------------------------------------------------------------ the document

    def run(self, plan: Plan, write: Callable[[str], None], events: Events | None = None, spaceless: bool = False) -> Summary:
        """Translate every chunk (cached ones from the cache), writing the document in order."""
        summary = Summary()
        self.cancel.clear()
        started = time.perf_counter()
        assembler = Assembler(plan, spaceless)
        keys = [self.job.chunk_key(chunk) for chunk in plan.chunks]
        todo: list[Chunk] = []
        cached: list[ChunkResult] = []
        for chunk, key in zip(plan.chunks, keys):
            hit = self.cache.get(key, len(chunk.atoms)) if (self.cache and self.resume) else None
            if hit is not None:
                cached.append(ChunkResult(chunk.index, hit, cached=True))
            else:
                todo.append(chunk)
        if events is not None:
            events.start(plan, len(cached))
        for result in cached:
            assembler.add(plan.chunks[result.index], result.translations)
            summary.add(result)
            if events is not None:
                events.chunk_done(plan.chunks[result.index], result)
        write(assembler.drain())

        def finish(result: ChunkResult) -> None:
            chunk = plan.chunks[result.index]
            if self.cache is not None:
                self.cache.put(keys[result.index], result.translations)
            assembler.add(chunk, result.translations)
            summary.add(result)
            if events is not None:
                events.chunk_done(chunk, result)
            write(assembler.drain())

        try:
            if self.parallel == 1 or len(todo) <= 1:
                for chunk in todo:
                    finish(self.translate_chunk(chunk, events, plan.markdown))
            else:
                self._run_parallel(todo, finish, plan.markdown)
        finally:
            self.cancel.set()
            summary.seconds = time.perf_counter() - started
        write(assembler.drain())
        return summary

    def _run_parallel(self, todo: list[Chunk], finish: Callable[[ChunkResult], None], markdown: bool) -> None:
        """Up to ``parallel`` chunks in flight on daemon threads; results handled here, in any order.

        An engine that runs several replies at once itself (the local one: ``parallel(n)`` gives a
        batched form of it, driven from this thread by ``pump``) is used that way; other engines
        (remote ones) are called from the threads directly.
        """
        work: queue.Queue[Chunk] = queue.Queue()
        for chunk in todo:
            work.put(chunk)
        results: queue.Queue[tuple[ChunkResult | None, BaseException | None]] = queue.Queue()
        count = min(self.parallel, len(todo))
        # the longest request: prompt, source and room for the reply (the longest chunk's)
        longest = max(self.overhead + c.source_tokens + self._max_tokens(c.source_tokens) + 8 for c in todo)
        batched = self.engine.parallel(count, longest) if isinstance(self.engine, Batching) else None
        engine = batched or self.engine

        def worker() -> None:
            while not self.cancel.is_set():
                try:
                    chunk = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    results.put((self.translate_chunk(chunk, None, markdown, engine), None))
                except _Cancelled:
                    return
                except BaseException as exc:  # handed to the main thread, which stops the rest
                    results.put((None, exc))
                    return
                finally:
                    if batched is not None:
                        batched.wake()

        def next_result() -> tuple[ChunkResult | None, BaseException | None]:
            while True:
                try:
                    if batched is None:
                        return results.get(timeout=0.2)
                    batched.pump(0.2)
                    return results.get_nowait()
                except queue.Empty:
                    if not any(t.is_alive() for t in threads) and results.empty():
                        raise EngineError("the translation workers stopped without a result") from None

        threads = [threading.Thread(target=worker, daemon=True, name=f"translate-{k}") for k in range(count)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(len(todo)):
                result, error = next_result()
                if error is not None:
                    raise error
                assert result is not None
                finish(result)
        finally:
            self.cancel.set()
            if batched is not None:  # the workers' replies end with an error; the model is theirs no more
                batched.close()
                for thread in threads:
                    thread.join(timeout=5)
