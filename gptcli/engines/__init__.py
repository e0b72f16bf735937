"""Engines turn chat messages into streamed text: the ``Engine`` protocol and its value types."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict, runtime_checkable

if TYPE_CHECKING:
    from gptcli.config import Settings

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    """One chat message, in the OpenAI shape every engine accepts."""

    role: Role
    content: str


@dataclass(frozen=True)
class Sampling:
    """Sampling options for one reply. ``seed=None`` means a fresh random seed."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    max_tokens: int | None = 1024
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep generating past end-of-generation tokens (benchmarks)


def sampling_from(settings: Settings, temperature: float | None = None, max_tokens: int | None = None) -> Sampling:
    """Sampling options from settings; a template's defaults apply where no flag/env/file set them."""
    temp = settings.temperature
    if temperature is not None and settings.sources.get("temperature") == "default":
        temp = temperature
    limit = settings.max_tokens
    if max_tokens is not None and settings.sources.get("max_tokens") == "default":
        limit = max_tokens
    return Sampling(
        temperature=temp,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        repeat_penalty=settings.repeat_penalty,
        max_tokens=limit,
        seed=settings.seed,
    )


@dataclass
class Usage:
    """What a finished (or interrupted) reply cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds from the call to the first text
    total_time: float = 0.0  # seconds from the call to the end
    finish_reason: str = "stop"  # stop | length | interrupted | context
    cached_tokens: int = 0  # prompt tokens reused from the KV cache

    @property
    def tokens_per_second(self) -> float:
        gen_time = self.total_time - self.time_to_first_token
        if self.completion_tokens <= 1 or gen_time <= 0:
            return 0.0
        return (self.completion_tokens - 1) / gen_time

    def as_dict(self) -> dict[str, float | int | str]:
        d = asdict(self)
        d["tokens_per_second"] = round(self.tokens_per_second, 2)
        return d


@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed reply: text, and on the last chunk the usage."""

    text: str = ""
    usage: Usage | None = field(default=None)


@runtime_checkable
class Engine(Protocol):
    """What every engine offers: streaming chat, token counting, and its context size."""

    model_name: str

    @property
    def context_length(self) -> int: ...

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        """Yield text chunks as they are generated, then one chunk carrying the ``Usage``."""
        ...

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens these messages take once formatted for the model (chat template included)."""
        ...

    def tokenize_count(self, text: str) -> int:
        """Tokens of a plain text, without any chat formatting."""
        ...

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        """Raw continuation of ``prompt``, no chat template."""
        ...
