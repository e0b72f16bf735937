"""A translation job (what into what, and how) and what translating it reports: per chunk and per document."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from gptcli.engines import Message, Sampling
from gptcli.languages import Language
from gptcli.templates import Template
from gptcli.translate.cache import CACHE_VERSION, digest
from gptcli.translate.checks import CHECKS, passed_counts
from gptcli.translate.glossary import Glossary
from gptcli.translate.planning import DocChunk, Plan


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
        return digest(
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

    def chunk_key(self, chunk: DocChunk) -> str:
        kind = "packed" if chunk.packed else ("line" if chunk.atoms[0].single_line else "text")
        return digest(self.key, kind, chunk.source, self.glossary.relevant(chunk.source))


@dataclass
class ChunkResult:
    index: int
    translations: list[str]
    cached: bool = False
    packed: bool = False  # translated in one trip with its structure intact
    fell_back: bool = False  # a packed chunk whose structure the model changed: its parts went one by one
    kept_source: int = 0  # pieces kept untranslated: their (last) reply failed a check
    truncated: int = 0  # replies cut at the length limit
    looped: int = 0  # replies stopped where they began repeating themselves
    spans_lost: int = 0  # pieces whose reply lost an inline code span, a link target or a URL (kept as the source)
    retried: int = 0  # pieces sent again because their first reply failed a check
    checks: list[tuple[str, ...]] = field(default_factory=list)  # per piece, the checks its last reply failed
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt tokens, those the engine reused from its KV cache (not evaluated again)
    completion_tokens: int = 0
    seconds: float = 0.0
    glossary_misses: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.cached:  # a cached chunk's pieces that failed were kept as their source
            self.kept_source = sum(bool(failed) for failed in self.checks)
            self.spans_lost = sum("spans" in failed for failed in self.checks)

    def add_reads(self, other: ChunkResult) -> None:
        """Add the counts ``_read`` made in ``other`` (for a reply read on another thread) to these."""
        self.prompt_tokens += other.prompt_tokens
        self.cached_tokens += other.cached_tokens
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
    retried: int = 0
    pieces: int = 0  # pieces judged (the texts the model translates: paragraphs, items, cells, sentences)
    passed: Counter[str] = field(default_factory=Counter)  # check name -> pieces whose last reply passed it
    trusted: int = 0  # pieces whose translation passed every check
    source_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
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
        self.retried += result.retried
        self.pieces += len(result.checks)
        self.passed.update(passed_counts(result.checks))
        self.trusted += sum(not failed for failed in result.checks)
        self.prompt_tokens += result.prompt_tokens
        self.cached_tokens += result.cached_tokens
        self.completion_tokens += result.completion_tokens
        self.glossary_misses.update(result.glossary_misses)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @property
    def trusted_share(self) -> float:
        """The share of pieces whose translation passed every check (1.0 with nothing to judge)."""
        return self.trusted / self.pieces if self.pieces else 1.0

    def checks_passed(self) -> dict[str, int]:
        return {name: self.passed[name] for name in CHECKS}


class Events(Protocol):
    """What a display hears about; ``token`` and ``attempt`` come only when chunks run one at a time."""

    def start(self, plan: Plan, cached: int) -> None: ...

    def attempt(self, index: int) -> None: ...

    def token(self, index: int, text: str) -> None: ...

    def chunk_done(self, chunk: DocChunk, result: ChunkResult) -> None: ...
