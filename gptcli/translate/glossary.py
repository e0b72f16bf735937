"""Glossaries: term pairs from CSV/TSV or TOML files, and the ones a chunk needs."""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gptcli.errors import InputError


@dataclass(frozen=True)
class Glossary:
    """Term pairs the translation must use."""

    terms: tuple[tuple[str, str], ...] = ()

    def relevant(self, text: str) -> list[tuple[str, str]]:
        """The pairs whose source term appears in ``text`` (whole words, any case)."""
        found = []
        for term, target in self.terms:
            hit: object
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
