"""Time to first token at each turn of a 10-turn chat: the KV cache keeps the shared prefix.

Usage: .venv/bin/python benchmarks/chat_turns.py [--turns 10] [--max-tokens 64] [--ctx 4096] [--runs 3]
                                                 [--threads N] [--flash-attn on|off]

Drives gptcli's own chat session (``gptcli.repl.ChatSession``: the conversation fitting and the
local engine a `gptcli chat` uses) with the embedded model, freshly loaded for each chat and warmed
up with one unrelated completion (so turn 1 pays no first-use cost and finds nothing useful in the
cache). For each turn it records the time to first token and how many prompt tokens came from the
cache; then it times the last turn's prompt on a freshly loaded model (empty cache) for contrast. Prints a Markdown table (for benchmarks/chat.md).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gptcli.config import load_settings  # noqa: E402
from gptcli.engines import Sampling  # noqa: E402
from gptcli.engines.threads import physical_cores  # noqa: E402
from gptcli.engines.local import LocalEngine, release_engines  # noqa: E402
from gptcli.flow import OutputMode  # noqa: E402
from gptcli.models import embedded_model_path  # noqa: E402
from gptcli.render import Env  # noqa: E402
from gptcli.repl import ChatSession  # noqa: E402

QUESTIONS = [
    "Hi! I am planning a trip to Lisbon in May. What should I pack?",
    "How many days are enough to see the city?",
    "What is the best way to get from the airport to the centre?",
    "Which neighbourhoods are good for an evening walk?",
    "What local dishes should I try?",
    "Is Sintra worth a day trip, and how do I get there?",
    "What about the beaches near Cascais?",
    "Any tips for saving money on public transport?",
    "What phrases in Portuguese would be useful?",
    "Can you summarise my plan so far in a few bullet points?",
]


def one_chat(turns: int, max_tokens: int, ctx: int, flags: dict) -> tuple[list[tuple[float, int, int]], ChatSession]:
    """(time to first token, prompt tokens, cached tokens) per turn of one chat."""
    os.environ.setdefault("GPTCLI_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "gptcli-bench-home"))
    settings = load_settings().with_flags(ctx=ctx, max_tokens=max_tokens, temperature=0.0, seed=1, history=False, **flags)
    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    release_engines()  # every chat starts on a freshly loaded model: nothing cached
    chat = ChatSession(settings, env, mode=OutputMode(plain=True), interactive=False)
    for _ in chat.engine.complete("Warm-up: the quick brown fox", Sampling(temperature=0.0, max_tokens=4)):
        pass
    results = []
    for question in QUESTIONS[:turns]:
        reply = chat.send(question)
        assert reply is not None, env.stderr.getvalue()
        usage = reply.usage
        results.append((usage.time_to_first_token, usage.prompt_tokens, usage.cached_tokens))
    notices = env.stderr.getvalue().strip()
    if notices:
        print(f"notices: {notices}", file=sys.stderr)
    return results, chat


def cold_first_token(chat: ChatSession, ctx: int, max_tokens: int) -> float:
    """The last turn's prompt on a freshly loaded (warmed-up) model: no cached prefix."""
    messages = chat.conversation.messages()[:-1]  # the request of the last turn
    release_engines()
    engine = LocalEngine(
        embedded_model_path(), ctx=ctx, threads=chat.settings.threads, flash_attn=chat.settings.flash_attn
    )
    try:
        for _ in engine.complete("Warm-up: the quick brown fox", Sampling(temperature=0.0, max_tokens=4)):
            pass
        usage = None
        for chunk in engine.stream(messages, Sampling(temperature=0.0, seed=1, max_tokens=4)):
            usage = chunk.usage or usage
        assert usage is not None
        return usage.time_to_first_token
    finally:
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: physical cores")
    parser.add_argument("--flash-attn", choices=("on", "off"), default=None, help="default: the flash_attn setting")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    flags: dict = {}
    if args.threads:
        flags["threads"] = args.threads
    if args.flash_attn:
        flags["flash_attn"] = args.flash_attn == "on"

    runs = []
    chat = None
    for _ in range(args.runs):
        results, chat = one_chat(args.turns, args.max_tokens, args.ctx, flags)
        runs.append(results)
    assert chat is not None
    ttft = [statistics.median(run[i][0] for run in runs) for i in range(args.turns)]
    prompt = [runs[-1][i][1] for i in range(args.turns)]
    cached = [runs[-1][i][2] for i in range(args.turns)]
    cold = statistics.median(cold_first_token(chat, args.ctx, args.max_tokens) for _ in range(args.runs))

    print(f"Machine: {platform.machine()}, {physical_cores()} physical cores, {platform.python_implementation()} {platform.python_version()}")
    settings = chat.settings
    print(f"Model: embedded SmolLM2-135M Q4_1, ctx {args.ctx}, {settings.threads or physical_cores()} threads,"
          f" flash attention {'on' if settings.flash_attn else 'off'}, replies up to {args.max_tokens} tokens,"
          f" greedy; median of {args.runs} chats. load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after.\n")
    print("| turn | prompt tokens | from cache | time to first token |")
    print("| ---: | ---: | ---: | ---: |")
    for i in range(args.turns):
        print(f"| {i + 1} | {prompt[i]} | {cached[i]} | {ttft[i] * 1000:.0f} ms |")
    ratio = ttft[-1] / ttft[0] if ttft[0] else float("inf")
    print(f"\nTurn {args.turns} / turn 1 time to first token: **{ratio:.2f}x** (target: at most 1.5x).")
    print(f"Turn {args.turns}'s prompt on a freshly loaded model (nothing cached): {cold * 1000:.0f} ms"
          f" ({cold / ttft[-1]:.1f}x the cached turn).")


if __name__ == "__main__":
    main()
