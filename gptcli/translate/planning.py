"""Chunk planning: a parsed document grouped into chunks (one trip to the model each) that fit its context."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from gptcli.errors import UsageError
from gptcli.translate.document import Block, Unit, Verbatim, parse_document


EXPANSION = 1.5  # room left for the translation: this many times the source's tokens...
MARGIN = 32  # ...plus this many
DEFAULT_CHUNK_TOKENS = 384  # the most source tokens in one chunk, even when the context holds more
# (smaller chunks keep the model's attention short: on a CPU, decoding at position 1,000 is ~40 % slower than at 100)
MIN_CHUNK_TOKENS = 8

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
class DocChunk:
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
    chunks: list[DocChunk]
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

    def count(part: str) -> int:  # type: ignore[no-redef]  # a part is measured at several levels: tokenize it once
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
    chunks: list[DocChunk] = []
    current: DocChunk | None = None
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
            current = DocChunk(len(chunks), atoms_of(index, block), [block], cost)
            continue
        # too long for one chunk: each part alone, and a part too long in pieces
        for atom in atoms_of(index, block):
            pieces = split_long_text(atom.text, chunk_tokens, count)
            for k, (piece, ws) in enumerate(pieces):
                single = atom.single_line or "\n" not in piece
                part = Atom(index, atom.part, k, len(pieces), piece, ws, single, atom.kind)
                chunks.append(DocChunk(len(chunks), [part], [block], count(piece)))
    close()
    for k, chunk in enumerate(chunks):
        chunk.index = k
    return Plan(blocks, chunks, markdown)
