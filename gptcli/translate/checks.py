"""Reply checks: is a piece's reply a translation? Its language, length, structure, numbers and spans.

A small model writes fluent text in the target language that is no translation, leaves the
source as it was, or adds a code fence that turns the rest of the document into code. Each
check below is cheap and errs on the side of passing: a piece too short to judge passes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from gptcli.translate.document import NOT_WORDS
from gptcli.translate.spans import lost_spans

CHECKS = ("language", "length", "structure", "numbers", "spans")

# language: judged on replies with at least this many letters (a CJK character counts 3: it
# holds about as much as three Latin letters); shorter ones ("Options", "Le modèle") are too
# short for the identifier (measured: py3langid gives "Le modèle" to Haitian Creole)
LANGUAGE_MIN_LETTERS = 20
# ...and a reply fails when, of the source's language and the target, the identifier gives the
# source's at least this probability (measured on benchmarks/data/manual.md: see benchmarks/README.md)
LANGUAGE_SOURCE_ODDS = 0.9
# length: judged when the source has at least this many letters; the reply's letters (CJK x3)
# must be within these bounds of the source's (French and German run 1.1-1.3x English)
LENGTH_MIN_LETTERS = 30
LENGTH_RATIO = (0.45, 2.5)

_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\u3040-\u30ff]")
_FENCE_MARK = re.compile(r"```|~~~")
_HEADING_LINE = re.compile(r"(?m)^[ \t]*#{1,6}[ \t]")
_ITEM_LINE = re.compile(r"(?m)^[ \t]*(?:[-*+]|\d{1,9}[.)])[ \t]")
_ROW_LINE = re.compile(r"(?m)^[ \t]*\|.*\|[ \t]*$")
_URL = re.compile(r"https?://[^\s<>()\[\]`]*[^\s<>()\[\]`.,;:!?'\"]|www\.[^\s<>()\[\]`]+")
# a number, its thousands separators and decimal mark written either way (1,000.5 = 1 000,5 = 1.000,5)
_NUMBER = re.compile(r"\d+(?:[.,\u00a0\u202f ]\d{3}(?!\d))*(?:[.,]\d+)?")
# langid's codes for the few languages it names otherwise
_LANGID_CODE = {"fil": "tl", "nb": "no", "nn": "no"}

_identifier: Any = None
_identifier_lock = threading.Lock()


def _langid() -> Any:
    """py3langid's identifier (its model ships in the package: no network), loaded once (~0.6 s);
    None when it cannot be loaded (it unpacks its model into a temporary file: a full temporary
    folder), and then no language is checked: a translation is not stopped for it."""
    global _identifier
    with _identifier_lock:
        if _identifier is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            try:
                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            except OSError as exc:
                logging.getLogger("gptcli").warning("the language identifier could not be loaded (%s): languages are not checked", exc)
                _identifier = False
        return _identifier or None


def langid_code(code: str) -> str | None:
    """The identifier's code for a language code (``zh-CN`` -> ``zh``); None if it does not know it."""
    base = code.split("-")[0].lower()
    base = _LANGID_CODE.get(base, base)
    identifier = _langid()
    return base if identifier is not None and base in identifier.nb_classes else None


def _words_only(text: str) -> str:
    """The words of ``text``: inline code, URLs and tags left out (they are in no language)."""
    return NOT_WORDS.sub(" ", text)


def letters(text: str) -> int:
    """Letters in ``text`` outside code and URLs, a CJK character counting 3."""
    words = _words_only(text)
    return sum(ch.isalpha() for ch in words) + 2 * len(_CJK.findall(words))


def detect_language(text: str) -> str | None:
    """The language of a document (the identifier's code), from its words; None if too little to tell."""
    words = _words_only(text[:20000])
    identifier = _langid()
    if identifier is None or letters(words) < LANGUAGE_MIN_LETTERS:
        return None
    code, _ = identifier.classify(words)
    return str(code)


def language_ok(source: str, reply: str, target: str | None, source_lang: str | None) -> bool:
    """Whether ``reply`` is not still in the source's language: of the two, the identifier must not
    give the source's language ``LANGUAGE_SOURCE_ODDS`` or more. Asking it to choose between two
    languages is much surer on a sentence than asking it to name one of 97. A reply equal to its
    source is untranslated whatever the identifier says. Too short to tell, or a language the
    identifier does not know: passes."""
    if target is None or source_lang is None or source_lang == target or letters(reply) < LANGUAGE_MIN_LETTERS:
        return True
    if " ".join(reply.split()) == " ".join(source.split()):
        return False
    probabilities = dict(_langid().rank(_words_only(reply)))
    p_source, p_target = probabilities.get(source_lang, 0.0), probabilities.get(target, 0.0)
    return bool(p_source + p_target <= 0 or p_source / (p_source + p_target) < LANGUAGE_SOURCE_ODDS)


def length_ok(source: str, reply: str) -> bool:
    """Whether the reply's length is plausible for a translation of ``source`` (an empty one never is)."""
    if not reply.strip():
        return False
    have = letters(source)
    if have < LENGTH_MIN_LETTERS:
        return True
    low, high = LENGTH_RATIO
    return low <= letters(reply) / have <= high


def added_structure(source: str, reply: str) -> list[str]:
    """What Markdown structure ``reply`` has more of than ``source``: a code fence (which would turn
    the rest of the document into code), a heading, a list item, a table row, a URL not in the source."""
    added = []
    for name, pattern in (("fence", _FENCE_MARK), ("heading", _HEADING_LINE), ("list item", _ITEM_LINE), ("table row", _ROW_LINE)):
        if len(pattern.findall(reply)) > len(pattern.findall(source)):
            added.append(name)
    if set(_URL.findall(reply)) - set(_URL.findall(source)):
        added.append("URL")
    return added


def _numbers(text: str) -> Counter[str]:
    return Counter(re.sub(r"\D", "", number) for number in _NUMBER.findall(_URL.sub(" ", text)))


def numbers_kept(source: str, reply: str) -> bool:
    """Whether ``reply`` has the numbers of ``source``, no more and no fewer (whatever their
    separators: 1,000.5 and 1 000,5 are one number)."""
    return _numbers(source) == _numbers(reply)


class Checker:
    """Judges each piece's reply against its source for one job (target language, document language)."""

    def __init__(self, target_code: str, source_code: str | None = None) -> None:
        self.target = langid_code(target_code)
        self.given = langid_code(source_code) if source_code else None
        self.source_lang = self.given

    def learn_source(self, document: str) -> None:
        """Take the document's language from its text (when ``--from`` did not give it)."""
        if self.given is None and self.target is not None:
            self.source_lang = detect_language(document)

    def failed(self, source: str, reply: str) -> tuple[str, ...]:
        """The names of the checks (``CHECKS``) that ``reply`` fails as a translation of ``source``."""
        failed = []
        if not language_ok(source, reply, self.target, self.source_lang):
            failed.append("language")
        if not length_ok(source, reply):
            failed.append("length")
        if added_structure(source, reply):
            failed.append("structure")
        if not numbers_kept(source, reply):
            failed.append("numbers")
        if lost_spans(source, reply):
            failed.append("spans")
        return tuple(failed)


def passed_counts(verdicts: Sequence[Sequence[str]]) -> dict[str, int]:
    """For each check, how many of these verdicts (failed names per piece) pass it."""
    failed = Counter(name for verdict in verdicts for name in verdict)
    return {name: len(verdicts) - failed[name] for name in CHECKS}
