"""Document translation: split a document into chunks that fit the model, translate them, reassemble, resume.

The package's modules, in the order a document meets them: ``document`` (the model and parser),
``planning`` (chunks), ``spans`` (placeholders), ``replies`` (reading a reply), ``checks`` (is it a
translation?), ``assembly``, ``glossary``, ``cache``, ``job`` (settings and reports) and
``translator``. The names other modules use are re-exported here.
"""

from __future__ import annotations

from gptcli.translate.assembly import Assembler
from gptcli.translate.cache import CACHE_VERSION, TranslationCache, cache_folder
from gptcli.translate.document import (
    MARKDOWN_SUFFIXES,
    Block,
    Cell,
    Line,
    Unit,
    Verbatim,
    has_words,
    looks_like_markdown,
    parse_document,
    split_lines,
)
from gptcli.translate.glossary import Glossary, load_glossary
from gptcli.translate.job import ChunkResult, Events, Job, Summary
from gptcli.translate.planning import (
    DEFAULT_CHUNK_TOKENS,
    EXPANSION,
    MARGIN,
    MIN_CHUNK_TOKENS,
    Atom,
    DocChunk,
    Plan,
    TokenCounter,
    plan_document,
    split_long_text,
)
from gptcli.translate.replies import (
    atom_reply_end,
    clean_output,
    could_match,
    echoes_prompt,
    is_preamble,
    match_translation,
    normalize_atom,
    prompt_lines,
    strip_preamble,
)
from gptcli.translate.spans import SPAN_PATTERN, RestoringEvents, lost_spans, protect_spans, restore_spans
from gptcli.translate.translator import Translator

__all__ = [
    "CACHE_VERSION", "DEFAULT_CHUNK_TOKENS", "EXPANSION", "MARGIN", "MARKDOWN_SUFFIXES", "MIN_CHUNK_TOKENS",
    "SPAN_PATTERN", "RestoringEvents", "Assembler", "Atom", "Block", "Cell", "ChunkResult", "DocChunk", "Events", "Glossary",
    "Job", "Line", "Plan", "Summary", "TokenCounter", "TranslationCache", "Translator", "Unit", "Verbatim",
    "atom_reply_end", "cache_folder", "clean_output", "could_match", "echoes_prompt", "has_words", "is_preamble",
    "load_glossary", "looks_like_markdown", "lost_spans", "match_translation", "normalize_atom", "parse_document",
    "plan_document", "prompt_lines", "protect_spans", "restore_spans", "split_lines", "split_long_text",
    "strip_preamble",
]
