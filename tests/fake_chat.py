"""``python -m tests.fake_chat ARGS``: ``gptcli ARGS`` with the scripted fake engine, for tests in a real terminal.

The script comes from environment variables: ``FAKE_REPLIES`` (a JSON list of replies),
``FAKE_DELAY`` (seconds between chunks) and ``FAKE_FIRST_DELAY`` (seconds before the first one, as
a model reading a long prompt).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Sequence

from gptcli.engines import Chunk, Message, Sampling
from tests.fakes import FakeEngine


class SlowStartEngine(FakeEngine):
    """A fake engine that waits before its first chunk (reading the prompt) and stops at ``max_tokens`` words."""

    first_delay: float = 0.0

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]
        self.samplings.append(sampling)
        return self._limited(self._reply(), self.count_tokens(messages), sampling.max_tokens)

    def _limited(self, text: str, prompt_tokens: int, max_tokens: int | None) -> Iterator[Chunk]:
        time.sleep(self.first_delay)
        words = text.split(" ")
        cut = max_tokens is not None and len(words) > max_tokens
        for chunk in self._chunks(" ".join(words[:max_tokens]) if cut else text, prompt_tokens):
            if cut and chunk.usage is not None and not chunk.text:
                chunk.usage.finish_reason = "length"
            yield chunk


def main() -> None:
    from gptcli.cli import main as gptcli_main
    from gptcli.engines import choose

    engine = SlowStartEngine(replies=json.loads(os.environ.get("FAKE_REPLIES", '["Hello from the fake engine."]')))
    engine.delay = float(os.environ.get("FAKE_DELAY", "0"))
    engine.first_delay = float(os.environ.get("FAKE_FIRST_DELAY", "0"))
    choose.open_engine = lambda settings: engine  # type: ignore[assignment]
    sys.argv = ["gptcli", *sys.argv[1:]]
    gptcli_main()


if __name__ == "__main__":
    main()
