"""Engines turn chat messages into streamed text: the ``Engine`` protocol and its value types."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

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
    grammar: str | None = None  # GBNF (root rule ``root``): the local engine samples only what it allows
    json_schema: dict[str, Any] | None = None  # the schema ``grammar`` came from (a remote engine sends it)
    speculative: bool | None = None  # draft tokens and verify them in one batch; None: the engine decides


def sampling_from(settings: Settings, temperature: float | None = None, max_tokens: int | None = None, *, edits: bool = False) -> Sampling:
    """Sampling options from settings; a template's defaults apply where no flag/env/file set them.

    ``edits``: the reply repeats much of its input (an editing template, a translation), so
    speculative decoding is on where it pays, with layers on a GPU (a batch of a draft's tokens
    costs about one step there), unless the ``speculative`` setting says otherwise. Not on a CPU
    alone: there a draft's batch costs most of a step per token, and the embedded model's edits,
    story, copy and translation all ran at 0.97-0.99x with drafts (benchmarks/README.md).
    """
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
        speculative=settings.speculative if settings.speculative is not None else (True if edits and settings.gpu_layers else None),
    )


@dataclass
class Usage:
    """What a finished (or interrupted) reply cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token: float = 0.0  # seconds from the call to the first text
    total_time: float = 0.0  # seconds from the call to the end
    finish_reason: str = "stop"  # stop | length | interrupted | context | loop
    cached_tokens: int = 0  # prompt tokens reused from the KV cache
    draft_tokens: int = 0  # tokens proposed by speculative decoding (prompt lookup or a draft model)
    accepted_tokens: int = 0  # of those, how many the model agreed with (kept in the reply)

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


# ---------------------------------------------------------------- capabilities
#
# What some engines can do beyond ``Engine``. Callers ask with ``isinstance(engine, Stateful)``
# and so on, never with ``getattr``/``hasattr``.


@runtime_checkable
class Stateful(Protocol):
    """An engine whose KV cache can be saved with a conversation and restored on resume."""

    def state_key(self) -> dict[str, Any]:
        """What a saved state is valid for (model file, context settings, llama.cpp version)."""
        ...

    def export_state(self) -> tuple[list[int], bytes]:
        """The cached tokens and the serialized cache for them."""
        ...

    def import_state(self, tokens: Sequence[int], data: bytes) -> bool:
        """Restore what ``export_state`` gave; False (and an empty cache) if it does not fit."""
        ...


@runtime_checkable
class Concurrent(Engine, Protocol):
    """An engine whose ``stream`` queues the request at once and may be called from any thread:
    several replies run side by side and may be read in any order."""

    def wake(self) -> None:
        """End a wait for requests (the driver thread is waiting in ``pump``)."""
        ...

    def pump(self, wait: float) -> bool:
        """Driver thread: evaluate one batch, or wait up to ``wait`` s for a request."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Batching(Protocol):
    """An engine that can open a ``Concurrent`` engine running up to ``n`` replies at once."""

    def parallel(self, n: int, n_ctx: int | None = None) -> Concurrent:
        """Up to ``n`` replies (of at most ``n_ctx`` tokens each) at once, on the same model."""
        ...

    def auto_parallel(self) -> int:
        """How many replies at once suit this engine's device and memory by default."""
        ...


@runtime_checkable
class Embedding(Protocol):
    """Something that turns texts into vectors (unit length, one per text, all of one size)."""

    model_name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...
