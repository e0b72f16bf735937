"""Knowledge-base files split into passages: Markdown sections under their heading path, or paragraph runs."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gptcli.errors import InputError
from gptcli.textio import CONVERT_ADVICE, closes_fence, decode_text, fence_mark, read_bytes, user_path

KB_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".text")
PASSAGE_CHARS = 1000  # a section longer than this is split at paragraph boundaries

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


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


# ---------------------------------------------------------------- splitting

def _blocks(lines: Sequence[str]) -> Iterable[tuple[str, int, str]]:
    """Yield ("heading", line, title-with-level) and ("block", line, text) items; code fences stay whole."""
    block: list[str] = []
    start = 0
    fence: str | None = None
    for number, line in enumerate(lines, 1):
        if fence is not None:
            block.append(line)
            if closes_fence(line, fence):
                fence = None
            continue
        if mark := fence_mark(line):
            if not block:
                start = number
            block.append(line)
            fence = mark
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
        path = user_path(name)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in KB_SUFFIXES)
            if not inside:
                raise InputError(f"knowledge-base folder {path} has no {', '.join(KB_SUFFIXES)} files")
            found.extend(inside)
        else:
            found.append(path)
    return found


@dataclass(frozen=True)
class KbFile:
    """One knowledge-base file: its passages and the hash of its bytes (the persistent index's key)."""

    path: Path
    digest: str
    passages: list[Passage]


def load_files(paths: Sequence[str], max_chars: int = PASSAGE_CHARS) -> list[KbFile]:
    """Read the knowledge-base files (each once, even if named twice) and split them into passages."""
    files: list[KbFile] = []
    seen: set[Path] = set()
    for path in kb_files(paths):
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        data = read_bytes(path)
        text = decode_text(data, str(path), None, advice=CONVERT_ADVICE)
        digest = hashlib.sha256(data).hexdigest()
        files.append(KbFile(path, digest, split_passages(text, str(path), max_chars)))
    if not any(f.passages for f in files):
        raise InputError("the knowledge base is empty: the --kb files hold no text")
    return files


def load_passages(paths: Sequence[str], max_chars: int = PASSAGE_CHARS) -> list[Passage]:
    """Read the knowledge-base files and split them into passages."""
    return [p for f in load_files(paths, max_chars) for p in f.passages]
