"""One reply between its tokens, for every local scheduler: usage, UTF-8, stop strings, length."""

from __future__ import annotations

import codecs
import time
from collections.abc import Sequence

from gptcli.engines import Sampling, Usage
from gptcli.errors import ContextOverflowError


def refuse_overflow(tokens: int, n_ctx: int) -> None:
    """A prompt that leaves no room in the window is an error, not a silent truncation."""
    if tokens >= n_ctx:
        raise ContextOverflowError(
            f"the input takes {tokens} tokens but the context window holds {n_ctx} (use a larger --ctx or a shorter input)"
        )


def shared_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens two sequences share from the start (what a KV cache can keep)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class StopFilter:
    """Cuts the reply at the first stop string, holding back text that may begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        self.held += text
        cut = min((i for s in self.stops if (i := self.held.find(s)) >= 0), default=-1)
        if cut >= 0:
            self.hit = True
            out, self.held = self.held[:cut], ""
            return out
        split = max(0, len(self.held) - self.keep)
        out, self.held = self.held[:split], self.held[split:]
        return out

    def flush(self, text: str) -> str:
        if self.hit:
            return ""
        out = self.feed(text) + self.held
        self.held = ""
        return out


class ReplyState:
    """One reply between its tokens, for both engines: usage and timing, the UTF-8 decoder (a
    character split across tokens waits for its end), stop strings, and the length budget."""

    def __init__(self, sampling: Sampling, prompt_tokens: int, budget: int, cached_tokens: int = 0) -> None:
        self.sampling = sampling
        self.usage = Usage(prompt_tokens=prompt_tokens, cached_tokens=cached_tokens)
        self.max_new = min(sampling.max_tokens or budget, budget)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stops = StopFilter(sampling.stop)
        self.started = time.perf_counter()
        self.ended = False  # by a stop string or the length budget (``usage.finish_reason`` says which)

    def add(self, piece: bytes) -> str:
        """Count one generated token (its bytes) and return the text it completes, if any; sets
        ``ended`` when the reply must end with it."""
        usage = self.usage
        usage.completion_tokens += 1
        text = self.stops.feed(self.decoder.decode(piece))
        if text:
            now = time.perf_counter()
            usage.time_to_first_token = usage.time_to_first_token or now - self.started
            usage.total_time = now - self.started
        if self.stops.hit:
            self.ended, usage.finish_reason = True, "stop"
        elif usage.completion_tokens >= self.max_new:
            self.ended, usage.finish_reason = True, "length" if self.max_new == self.sampling.max_tokens else "context"
        return text

    def tail(self) -> str:
        """The text held back at the end (a partial stop string that never completed, a split character)."""
        return self.stops.flush(self.decoder.decode(b"", final=True))

    def close(self) -> Usage:
        """The final usage: total time, and a time to first token even for a reply of nothing."""
        usage = self.usage
        usage.total_time = time.perf_counter() - self.started
        usage.time_to_first_token = usage.time_to_first_token or usage.total_time
        return usage
