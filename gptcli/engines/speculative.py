"""Draft tokens for speculative decoding: prompt lookup, a small draft model, and the adaptive draft length.

A scheduler asks a drafter for up to ``k`` tokens that may follow what the sequence holds, has the
model evaluate them in one batch, and keeps those the model's own sampler agrees with (see
``LocalEngine._run``). A drafter only proposes: a bad draft costs time, never a different reply.
"""

from __future__ import annotations

from collections.abc import Sequence

from gptcli.engines import Sampling
from gptcli.engines.llama import LlamaContext, LlamaModel, Sampler
from gptcli.engines.reply import shared_prefix

NGRAM_MAX = 4  # the longest n-gram looked up (longer matches are rare and no better)
NGRAM_MIN = 2  # single tokens ("the", ",") match everywhere and predict little
DRAFT_MAX = 16  # tokens a draft may hold (llama.cpp's server uses 16 for n-gram drafts too)


class PromptLookup:
    """Drafts by prompt lookup: the longest n-gram (``NGRAM_MAX`` down to ``NGRAM_MIN`` tokens) at
    the end of the sequence is looked up earlier in the sequence (the prompt and the reply so far),
    and the tokens that followed it there are the draft.

    Editing replies copy long runs of their input, so once a run is found the next draft continues
    from where the last one stopped (``follow``) rather than from the latest occurrence of the
    n-gram, which may be another copy of a common phrase. An index of every n-gram's latest end
    makes a lookup a few dictionary reads.
    """

    def __init__(self, tokens: Sequence[int]) -> None:
        self.history: list[int] = []
        self.index: dict[tuple[int, ...], int] = {}
        self.follow = -1  # where the last draft's source continues (-1: none)
        self.following = False  # whether the last draft continued a run (else: a fresh lookup)
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Add tokens to the sequence (the prompt, then each token kept in the reply)."""
        history, index = self.history, self.index
        for token in tokens:
            # the n-grams ending just before this token now have a continuation: this token
            end = len(history)
            for n in range(NGRAM_MIN, NGRAM_MAX + 1):
                if end >= n:
                    index[tuple(history[end - n : end])] = end
            history.append(token)
            if self.follow >= 0:
                self.follow = self.follow + 1 if self.follow < end and history[self.follow] == token else -1

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that may come next ([] when the end of the sequence matches nothing)."""
        history = self.history
        end = len(history)
        self.following = 0 <= self.follow < end
        if self.following:
            return history[self.follow : min(self.follow + k, end)]
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            if end < n:
                continue
            start = self.index.get(tuple(history[end - n :]))
            if start is not None:
                self.follow = start
                return history[start : min(start + k, end)]
        return []


class DraftModel:
    """Drafts with a small model sharing the target's vocabulary: greedy tokens from its own
    context, whose cache keeps the longest prefix of the sequence between drafts."""

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_batch: int, threads: int, flash_attn: bool) -> None:
        self.model = model
        self.context: LlamaContext = model.context(n_ctx=n_ctx, n_batch=n_batch, threads=threads, flash_attn=flash_attn)
        self.kv: list[int] = []
        self.sampling = Sampling(temperature=0, top_k=1, repeat_penalty=1.0)

    def draft(self, history: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` greedy tokens of the draft model after ``history`` ([] if its context is full)."""
        context, kv = self.context, self.kv
        k = min(k, context.n_ctx - len(history) - 1)
        if k <= 0:
            return []
        reused = min(shared_prefix(kv, history), len(history) - 1)  # the last one again, for its logits
        context.forget(0, reused)
        del kv[reused:]
        if context.decode(history[reused:], reused) != 0:
            context.forget(0, reused)
            return []
        kv.extend(history[reused:])
        sampler: Sampler = self.model.sampler(self.sampling, 0)
        out: list[int] = []
        try:
            while True:
                token = sampler.sample(context)
                if self.model.is_eog(token):
                    break
                out.append(token)
                if len(out) == k or context.step(token, len(kv)) != 0:
                    break
                kv.append(token)
        finally:
            sampler.free()
            context.forget(0, len(kv))
        return out

    def close(self) -> None:
        self.context.close()


# What a draft costs in generated tokens: a batch of 1 + k tokens costs a step, plus OVERHEAD
# (a batch of another shape: llama.cpp builds a new graph), plus RATIO a drafted token. Measured
# (benchmarks/README.md): on the 2-core CPU, SmolLM2-135M, a batch of 2 costs 1.85 steps, of 9
# about 5.6, of 17 about 9.7; on a GPU a batch of 16 costs about what one token does. Fixed per
# device rather than timed as replies run: which tokens go through a batch changes the float
# rounding of the logits (a batch's and a step's differ in the last places), so drafting must
# depend on the tokens alone for a seeded reply to be the same bytes at every run.
CPU_RATIO, CPU_OVERHEAD = 0.55, 0.3
GPU_RATIO, GPU_OVERHEAD = 0.02, 0.1
PRIORS = {"run": (4.0, 5.0), "lookup": (1.0, 2.0), "model": (4.0, 5.0)}  # taken, checked: what p starts at


class DraftLength:
    """How many tokens to draft next: as many as are worth their cost.

    A draft of ``k`` tokens pays when the tokens it is expected to add are worth more than the
    batch costs beyond a step: with ``p`` the chance that a drafted token is taken given the one
    before it was, its ``i``-th token is worth ``p**i`` generated tokens, and the batch costs
    ``overhead + k * ratio`` of one (``CPU_RATIO``, ``GPU_RATIO``): the ``k`` with the largest
    gain is drafted, none if no ``k`` gains. ``p`` is counted
    from the last drafts (recent ones weigh more), for each kind of draft apart: a run being
    copied ("run"), a fresh n-gram lookup ("lookup"), the draft model ("model"). When no draft of
    a kind pays, one token of it is drafted every ``PROBE`` tokens to find out whether the reply has started to repeat its input: a reply that never
    does pays that probe only, a fraction of a percent of its time.
    """

    PROBE = 64

    def __init__(self, ratio: float = CPU_RATIO, overhead: float = CPU_OVERHEAD, most: int = DRAFT_MAX) -> None:
        self.ratio, self.overhead, self.most = ratio, overhead, most
        self.counts: dict[str, list[float]] = {}  # kind: [taken, checked], from PRIORS
        self.wait: dict[str, int] = {}

    def p(self, kind: str) -> float:
        taken, checked = self.counts.setdefault(kind, list(PRIORS.get(kind, (1.0, 2.0))))
        return taken / checked

    def tick(self) -> None:
        """One token generated (the probes' clocks run)."""
        for kind, left in self.wait.items():
            if left > 0:
                self.wait[kind] = left - 1

    def next(self, kind: str, room: int) -> int:
        """Tokens of a draft of ``kind`` worth checking now (0: none); ``room``: the most allowed."""
        if self.wait.get(kind, 0) > 0:
            return 0
        p = self.p(kind)
        k, best, gain, worth = 0, 0.0, -self.overhead, 1.0
        for i in range(1, self.most + 1):
            worth *= p
            gain += worth - self.ratio
            if gain > best:
                k, best = i, gain
            elif worth < self.ratio:
                break
        if k == 0:
            k, self.wait[kind] = 1, self.PROBE
        return max(0, min(k, room))

    def update(self, kind: str, drafted: int, accepted: int) -> None:
        """A draft of ``kind`` of ``drafted`` tokens was checked and its first ``accepted`` were taken."""
        checked = accepted + (1 if accepted < drafted else 0)
        counts = self.counts.setdefault(kind, list(PRIORS.get(kind, (1.0, 2.0))))
        counts[0] = 0.85 * counts[0] + accepted
        counts[1] = 0.85 * counts[1] + checked
