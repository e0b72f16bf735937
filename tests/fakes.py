"""A scripted engine for fast unit tests: it records what it was asked and replies from a script."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gptcli.engines import Chunk, Engine, Message, Sampling, Usage


@dataclass
class FakeEngine:
    """Replies with the scripted texts in order (the last one repeats), in word-sized chunks."""

    replies: list[str] = field(default_factory=lambda: ["Hello from the fake engine."])
    model_name: str = "fake"
    context_size: int = 4096
    delay: float = 0.0  # seconds between chunks, to test interruption
    calls: list[list[Message]] = field(default_factory=list)
    samplings: list[Sampling] = field(default_factory=list)

    @property
    def context_length(self) -> int:
        return self.context_size

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.tokenize_count(m["content"]) + 4 for m in messages)

    def tokenize_count(self, text: str) -> int:
        return len(text.split()) + text.count("\n")

    def _reply(self) -> str:
        index = min(len(self.calls) - 1, len(self.replies) - 1)
        return self.replies[index]

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]
        self.samplings.append(sampling)
        return self._chunks(self._reply(), self.count_tokens(messages))

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        self.calls.append([{"role": "user", "content": prompt}])
        self.samplings.append(sampling)
        return self._chunks(self._reply(), self.tokenize_count(prompt))

    def _chunks(self, text: str, prompt_tokens: int) -> Iterator[Chunk]:
        usage = Usage(prompt_tokens=prompt_tokens)
        start = time.perf_counter()
        words = text.split(" ")
        for i, word in enumerate(words):
            if self.delay:
                time.sleep(self.delay)
            usage.completion_tokens += 1
            usage.time_to_first_token = usage.time_to_first_token or time.perf_counter() - start
            yield Chunk(word if i == len(words) - 1 else word + " ", usage)
        usage.total_time = time.perf_counter() - start
        yield Chunk("", usage)


def collect(chunks: Iterator[Chunk]) -> tuple[str, Usage | None]:
    """A stream's whole text and its last usage (the one that says how the reply ended)."""
    text, usage = "", None
    for chunk in chunks:
        text += chunk.text
        usage = chunk.usage or usage
    return text, usage


@dataclass
class RecordingEngine:
    """Passes everything to a real engine and keeps each reply's usage (what each request cost): the
    translation tests and benchmarks/translate_bench.py count prompt and reply tokens with it."""

    inner: Engine
    usages: list[Usage] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    @property
    def context_length(self) -> int:
        return self.inner.context_length

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self.inner.count_tokens(messages)

    def tokenize_count(self, text: str) -> int:
        return self.inner.tokenize_count(text)

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        # the request goes now, as it would without this wrapper (a batched engine starts on it at once)
        return self._record(self.inner.stream(messages, sampling))

    def _record(self, reply: Iterator[Chunk]) -> Iterator[Chunk]:
        usage = None
        try:
            for chunk in reply:
                usage = chunk.usage or usage
                yield chunk
        finally:
            getattr(reply, "close", lambda: None)()
            if usage is not None:  # also a reply the translator stopped reading: its tokens were spent
                self.usages.append(usage)

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        return self.inner.complete(prompt, sampling)

    def parallel(self, n: int, n_ctx: int | None = None) -> RecordingEngine:
        """The inner engine's batched form (as the translator asks for it), recording into the same list."""
        return RecordingEngine(self.inner.parallel(n, n_ctx), self.usages)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:  # pump, wake, close: the inner engine's
        return getattr(self.inner, name)
