"""The document model: Markdown or plain text parsed into blocks that join back byte for byte."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from gptcli.textio import closes_fence, fence_mark


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
    return quote + (" " * len(rest) if ITEM_MARKER.match(rest) else rest)


_PIPE = re.compile(r"(?<!\\)\|")
_QUOTE = re.compile(r"((?:[ \t]{0,3}>[ \t]?)*)")
# a heading's section number ("1.2", "3.", "A.1") is part of its marker: never sent, never changed
_HEADING = re.compile(r"([ \t]{0,3}#{1,6}[ \t]+(?:(?:\d+(?:\.\d+)*\.?|[A-Z](?:\.\d+)+\.?|[A-Z]\.)[ \t]+(?=\S))?)(.*?)((?:[ \t]+#+)?[ \t]*)$")
ITEM_MARKER = re.compile(r"[ \t]*(?:[-*+]|\d{1,9}[.)])(?:[ \t]+|$)(?:\[[ xX]\][ \t]+)?")
_HTML = re.compile(r"[ \t]*(<!--.*|</?[A-Za-z][^>]*>)[ \t]*$")
_LINK_DEF = re.compile(r"[ \t]{0,3}\[[^\]]+\]:[ \t]*\S+")
_TABLE_SEP = re.compile(r"[ \t]*\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
# (?<!\S): a run of non-spaces is tried from its start only, so a 10 MB line without spaces is linear, not quadratic
NOT_WORDS = re.compile(r"`[^`]*`|<[^>\s]*>|https?://\S+|www\.\S+|(?<!\S)\S+@\S+\.\w+")
_MARKDOWN_SIGNS = re.compile(r"^(#{1,6} |```|~~~|\|.*\||[-*+] |\d+\. |> )", re.M)
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown", ".mkd", ".mdx", ".rmd", ".qmd"}


def has_words(text: str) -> bool:
    """Whether ``text`` has letters outside inline code, URLs and tags (anything worth translating)."""
    return any(ch.isalpha() for ch in NOT_WORDS.sub(" ", text))


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
        if ITEM_MARKER.match(rest):
            return True
        if markdown and (
            fence_mark(rest) or _HEADING.match(rest) or _HTML.match(rest) or is_row(k) or _LINK_DEF.match(rest)
        ):
            return True
        return False

    def first(start: int, found: Callable[[int], bool]) -> int:
        """The first line from ``start`` on where ``found`` holds (``n`` if none)."""
        return next((k for k in range(start, n) if found(k)), n)

    def verbatim_end(k: int, quote: str, rest: str, after_blank: bool, in_list: bool) -> int | None:
        """Where a block kept as it is (code, a comment, HTML) that starts at line ``k`` ends; None if none starts there."""
        mark = fence_mark(rest)
        if mark:

            def closes(j: int) -> bool:
                return closes_fence(quote_of(j)[1], mark)

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
        if rest.strip() and not body(i).startswith((" ", "\t")) and not ITEM_MARKER.match(rest):
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
        item = ITEM_MARKER.match(rest)  # a list item, or a paragraph: its lines run to the next block
        if item:
            in_list = True
        group = [line_of(i, len(quote) + (item.end() if item else 0))]
        k = i + 1
        while k < n and not starts_block(k) and quote_of(k)[0] == quote:
            group.append(line_of(k, len(quote)))
            k += 1
        blocks.append(Unit("item" if item else "paragraph", tuple(group)))
        i = k
    return blocks
