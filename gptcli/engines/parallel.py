"""Several replies at once from one loaded model: one llama.cpp context, one batch a step.

A CPU (and more so a GPU) computes a batch of N tokens in much less than N times the time of
one, so replies that run side by side, one token each per ``llama_decode``, come out faster
together than one after another (on the 2-core machine of ``benchmarks/README.md``, four replies
decode at about 1.7x the tokens/s of one). ``translate`` uses this for the chunks of a document.

``ParallelEngine.stream`` may be called from any thread: it queues a request and reads the reply
from a queue of its own. The thread that made the engine (the driver) evaluates the batches, in
``pump``: it admits requests into free sequences (each into the one whose cache already holds the
longest prefix of its prompt, such as a shared prompt template), fills each batch with one token
per generating sequence plus as much of the waiting prompts as fits, and samples each sequence
with its own sampler. llama.cpp runs on the main thread that way (its OpenMP threads run a third
slower when a second thread drives them) and Ctrl-C stops a long batch as it does in the chat.

No speculative decoding here (``Sampling.speculative`` is ignored): drafts pay because one
sequence's step leaves the hardware idle (a batch of 8 tokens costs little more than one on a
GPU), and a batch of several sequences already fills that room with real tokens, so each drafted
token would take the place of a token another reply needs. On the 2-core CPU of
``benchmarks/README.md`` a batch is compute-bound from a few tokens on and a draft's tokens cost
most of a step each (see there). ``translate --parallel 1`` runs on the single-sequence engine,
which speculates.

Nor is a prompt's last token evaluated alone, as the single-sequence engine does so that a seeded
reply does not depend on its cache: here it shares a batch with other sequences' tokens, whose
number picks llama.cpp's kernel, so the first token's logits depend on the batch mates anyway.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptcli.engines import Chunk, Message, Sampling
from gptcli.engines.llama import LlamaContext, LlamaModel, Sampler
from gptcli.engines.reply import ReplyState, refuse_overflow, shared_prefix
from gptcli.engines.threads import ThreadGovernor
from gptcli.errors import EngineError, ModelError

KV_BUDGET = 1 << 30  # bytes of KV cache the automatic choice of sequences may take
AUTO_MAX = 4  # beyond 4 the gain is small on a CPU (benchmarks/README.md)
BATCH = 128  # tokens a step: prompts of more take several steps; llama.cpp's buffers grow with it


GPU_MAX = 16  # on a GPU a step of 16 tokens costs about what a step of one does
GPU_SHARE = 0.5  # of the device's free memory, what the automatic choice may give the caches


def auto_parallel(kv_bytes_per_token: int | None, n_ctx: int, *, gpu_free: int = 0) -> int:
    """How many replies to run at once by default.

    On a CPU: up to 4, while their KV caches fit in 1 GiB (beyond 4 the gain is small there). With
    layers on a GPU (``gpu_free``: its free bytes): up to 16, while the caches take at most half
    of the free memory.
    """
    if not kv_bytes_per_token:
        return 1
    per_sequence = kv_bytes_per_token * n_ctx
    if gpu_free:
        return int(max(1, min(GPU_MAX, int(gpu_free * GPU_SHARE) // per_sequence)))
    return int(max(1, min(AUTO_MAX, KV_BUDGET // per_sequence)))


@dataclass(eq=False)
class _Request:
    tokens: list[int]
    sampling: Sampling
    out: queue.SimpleQueue[Chunk | BaseException] = field(default_factory=queue.SimpleQueue)  # _CLOSED ends it early
    cancelled: bool = False


@dataclass(frozen=True)
class _Final(Chunk):
    """The last chunk of a reply, the one whose usage is final."""


@dataclass(eq=False)
class _Slot:
    """One llama.cpp sequence: what its cache holds, and the request it is serving, if any."""

    seq: int
    kv: list[int] = field(default_factory=list)  # the tokens whose keys and values it holds
    request: _Request | None = None
    todo: list[int] = field(default_factory=list)  # prompt tokens not evaluated yet
    sampler: Sampler | None = None
    reply: ReplyState | None = None
    last: int = -1  # the token sampled last, to be evaluated in the next batch
    added: list[int] = field(default_factory=list)  # what it put in the current batch
    logits_at: int = -1  # the index in the current batch whose logits it samples from


class ParallelEngine:
    """Up to ``n`` replies at once from ``engine``'s model (see the module's docstring)."""

    def __init__(
        self,
        model: LlamaModel,
        n: int,
        *,
        n_ctx: int,
        n_batch: int,
        threads: int,
        flash_attn: bool,
        name: str,
        governed: bool = False,
        on_close: Callable[[ParallelEngine], None] | None = None,
    ) -> None:
        self.model = model
        self.n = max(1, n)
        self.n_ctx = n_ctx  # each sequence's window
        self.model_name = name
        self._on_close = on_close
        self._slots = [_Slot(seq) for seq in range(self.n)]
        self._pending: deque[_Request] = deque()
        self._cv = threading.Condition()
        self._driver = threading.current_thread()
        self._closed = False
        try:  # each sequence attends over its own cells only (not unified)
            self._context: LlamaContext | None = model.context(
                n_ctx=self.n_ctx * self.n,
                n_batch=max(min(n_batch, BATCH), self.n),
                n_seq=self.n,
                threads=threads,
                flash_attn=flash_attn,
                unified=False,
            )
        except ModelError as exc:
            raise ModelError(
                f"no memory for {self.n} replies at once of {self.n_ctx} tokens each ({exc}): use a smaller --parallel or --ctx"
            ) from None
        self._n_batch = self._context.n_batch
        # the thread count follows what other processes leave free, as for one reply (engines.threads):
        # with 2 spinning threads beside a busy process, the first batches of a translation ran at a
        # tenth of their speed (300 ms a step against 25)
        self.governor = ThreadGovernor(self._set_threads, threads) if governed else None

    def _set_threads(self, n: int) -> None:
        if self._context is not None:
            self._context.set_threads(n, batch=n)

    # ------------------------------------------------------------ Engine

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.model.format(messages, self.n_ctx))

    def tokenize_count(self, text: str) -> int:
        return len(self.model.tokenize(text, add_bos=False, special=False))

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        return self._submit(self.model.format(messages, self.n_ctx), sampling)

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        return self._submit(self.model.raw_prompt(prompt, self.n_ctx), sampling)

    def _submit(self, tokens: list[int], sampling: Sampling) -> Iterator[Chunk]:
        refuse_overflow(len(tokens), self.n_ctx)
        request = _Request(tokens, sampling)
        with self._cv:
            if self._closed:
                raise EngineError("the model's batch context is closed")
            self._pending.append(request)
            self._cv.notify_all()
        return _Reply(self, request)

    def wake(self) -> None:
        """End a ``pump`` that is waiting for requests (say, because a result is ready elsewhere)."""
        with self._cv:
            self._cv.notify_all()

    def close(self) -> None:
        """Abandon the replies in flight (their readers get an error) and free the context."""
        if self._context is None:
            return
        if threading.current_thread() is not self._driver:
            raise RuntimeError("ParallelEngine.close() belongs to the thread that made it")
        if self._on_close is not None:
            with contextlib.suppress(ValueError):
                self._on_close(self)
        error = EngineError("the model's batch context was closed")
        with self._cv:
            self._closed = True
            for slot in self._slots:
                self._drop(slot, error)
            while self._pending:
                self._pending.popleft().out.put(error)
            self._cv.notify_all()
        self._context.close()
        self._context = None

    def __enter__(self) -> ParallelEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the driver's side

    def pump(self, wait: float) -> bool:
        """Evaluate one batch if any reply is waiting for one; else wait up to ``wait`` s for a request.

        Driver thread only. Returns whether a batch was evaluated. A failure of llama.cpp is
        passed to every reader in flight and raised here too.
        """
        with self._cv:
            if self._closed:
                return False
            self._admit()
            if not self._busy():
                self._cv.wait(wait)
                self._admit()
                if not self._busy():
                    return False
        try:
            self._step()
        except EngineError as exc:
            with self._cv:
                for slot in self._slots:
                    self._drop(slot, exc)
            raise
        return True

    def _busy(self) -> bool:
        return any(slot.request is not None for slot in self._slots)

    @property
    def busy(self) -> bool:
        """Whether any reply is being written or waits for a sequence."""
        with self._cv:
            return self._busy() or any(not r.cancelled for r in self._pending)

    def cached(self, seq: int) -> list[int]:
        """The tokens sequence ``seq``'s cache holds (what the next prompt there can reuse)."""
        return list(self._slots[seq].kv)

    def _admit(self) -> None:
        """Free the sequences of readers that left; give waiting requests the free ones."""
        context = self._context
        assert context is not None
        for slot in self._slots:
            if slot.request is not None and slot.request.cancelled:
                self._drop(slot, None)
        while self._pending:
            free = [slot for slot in self._slots if slot.request is None]
            if not free:
                return
            request = self._pending.popleft()
            if request.cancelled:
                continue
            tokens, sampling = request.tokens, request.sampling
            slot = max(free, key=lambda s: shared_prefix(s.kv, tokens))
            reused = min(shared_prefix(slot.kv, tokens), len(tokens) - 1)  # the last one again, for its logits
            context.forget(slot.seq, reused)
            del slot.kv[reused:]
            seed = sampling.seed if sampling.seed is not None else secrets.randbelow(2**31)
            slot.request = request
            slot.todo = tokens[reused:]
            slot.sampler = self.model.sampler(sampling, seed)
            slot.reply = ReplyState(sampling, len(tokens), self.n_ctx - len(tokens), cached_tokens=reused)

    def _step(self) -> None:
        """One ``llama_decode``: a token for each generating sequence, then prompt tokens as room allows."""
        context = self._context
        assert context is not None
        put = context.put
        n = prompt_tokens = 0
        active = [slot for slot in self._slots if slot.request is not None]
        for slot in active:
            slot.added, slot.logits_at = [], -1
            if not slot.todo:
                put(n, slot.last, len(slot.kv), slot.seq, True)
                slot.added, slot.logits_at = [slot.last], n
                n += 1
        for slot in active:
            room = self._n_batch - n
            if not slot.todo or room <= 0:
                continue
            part, slot.todo = slot.todo[:room], slot.todo[room:]
            for i, token in enumerate(part):
                put(n + i, token, len(slot.kv) + i, slot.seq, False)
            n += len(part)
            prompt_tokens += len(part)
            slot.added = part
            if not slot.todo:
                context.mark_logits(n - 1)
                slot.logits_at = n - 1
        if self.governor is not None:
            if self.governor.steps == 0:
                self.governor.check()  # the first batch: from the processes running now
            self.governor.step()
        caught: list[int] = []
        if prompt_tokens:  # a long batch: Ctrl-C may stop it halfway (see LlamaContext.abort_on_signals)
            with context.abort_on_signals() as caught:
                rc = context.submit(n)
        else:
            rc = context.submit(n)
        if rc != 0:
            for slot in active:  # whatever llama.cpp kept of this batch goes
                context.forget(slot.seq, len(slot.kv))
            if caught:
                return
            raise EngineError(f"llama.cpp could not evaluate a batch of {n} tokens (llama_decode returned {rc})")
        for slot in active:
            slot.kv.extend(slot.added)
        for slot in active:
            if slot.logits_at >= 0:
                self._sample(slot)

    def _sample(self, slot: _Slot) -> None:
        request, reply, sampler, model = slot.request, slot.reply, slot.sampler, self.model
        assert request is not None and reply is not None and sampler is not None and self._context is not None
        token = sampler.sample(self._context, slot.logits_at)
        if not request.sampling.ignore_eos and model.is_eog(token):
            reply.usage.finish_reason = "stop"
            self._finish(slot)
            return
        if text := reply.add(model.piece(token)):
            request.out.put(Chunk(text, reply.usage))
        if reply.ended:
            self._finish(slot)
        else:
            slot.last = token

    def _finish(self, slot: _Slot) -> None:
        request, reply = slot.request, slot.reply
        assert request is not None and reply is not None
        if tail := reply.tail():
            request.out.put(Chunk(tail, reply.usage))
        request.out.put(_Final("", reply.close()))
        self._drop(slot, None)

    def _drop(self, slot: _Slot, error: BaseException | None) -> None:
        """Free the slot's sampler and request; its cache (and ``kv``) stay for the next prompt."""
        if slot.sampler is not None:
            slot.sampler.free()
            slot.sampler = None
        if slot.request is not None and error is not None:
            slot.request.out.put(error)
        slot.request, slot.todo, slot.reply = None, [], None


class _Reply(Iterator[Chunk]):
    """A queued request's reply, read chunk by chunk; ``close()`` (also before the first chunk) frees its sequence."""

    def __init__(self, engine: ParallelEngine, request: _Request) -> None:
        self._engine = engine
        self._request = request
        self._done = False

    def __next__(self) -> Chunk:
        request = self._request
        if self._done:
            raise StopIteration
        if threading.current_thread() is self._engine._driver:  # nobody else evaluates batches: this reader does
            while request.out.empty():
                self._engine.pump(0.05)
        item = request.out.get()
        if item is _CLOSED or self._done:  # closed by another thread while this one waited
            raise StopIteration
        if isinstance(item, BaseException):
            self.close()
            raise item
        if isinstance(item, _Final):
            self.close()
            return Chunk("", item.usage)
        return item

    def close(self) -> None:
        """Stop reading: a reply still queued or being written is cancelled and its sequence freed
        (also from another thread than its reader's, which then stops waiting)."""
        if not self._done:
            self._done = True
            self._request.cancelled = True
            self._request.out.put(_CLOSED)


_CLOSED = Chunk("")  # wakes a reader whose reply was closed from elsewhere


def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits
