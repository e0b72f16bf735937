"""The local engine: a GGUF model run in this process by llama.cpp, one reply at a time.

A scheduler on the llama layer (``engines.llama``): it keeps one context whose KV cache holds the
longest shared prefix of the previous prompt and reply, so the next turn of a chat evaluates only
what is new. ``parallel()`` opens the batched scheduler (``engines.parallel``) on the same weights.
"""

from __future__ import annotations

import atexit
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gptcli.config import use_flash_attention
from gptcli.engines import Chunk, Message, Sampling
from gptcli.engines.devices import gpu_free_memory
from gptcli.engines.llama import LlamaContext, LlamaModel, llama_cpp_version
from gptcli.engines.parallel import ParallelEngine, auto_parallel
from gptcli.engines.threads import ThreadGovernor, default_threads, physical_cores
from gptcli.engines.reply import ReplyState, refuse_overflow, shared_prefix
from gptcli.engines.speculative import (
    CPU_OVERHEAD,
    CPU_RATIO,
    DRAFT_MAX,
    GPU_OVERHEAD,
    GPU_RATIO,
    DraftLength,
    DraftModel,
    PromptLookup,
)
from gptcli.errors import EngineError, ModelError
from gptcli.ggufinfo import GGUFInfo, read_gguf

__all__ = ["LocalEngine", "default_context", "load_local_engine", "physical_cores", "release_engines"]


def default_context(info: GGUFInfo, requested: int | None) -> int:
    """``--ctx`` if given, else min(the model's training context, 4096); always a multiple of 256."""
    if requested:
        return requested
    trained = info.context_length or 4096
    size = min(trained, 4096)
    return max(256, size // 256 * 256)


class LocalEngine:
    """Chat with a GGUF model in this process; the model is loaded once and reused across turns.

    Implements ``Engine``, ``Stateful`` (the KV cache saved with a conversation) and ``Batching``
    (``parallel`` for several replies at once).
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str | None = None,
        ctx: int | None = None,
        threads: int | None = None,
        gpu_layers: int = 0,
        flash_attn: bool | None = None,
        batch_size: int = 512,
        fit: int | None = None,
        draft_model: Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.info = read_gguf(self.path)  # a broken file is an error here, never an abort in C
        self.model_name = name or self.path.name
        self.n_ctx = default_context(self.info, ctx)
        if fit and not ctx:  # only what the caller will use: a smaller context loads faster
            self.n_ctx = min(self.n_ctx, max(256, -(-fit // 256) * 256))
        self.threads = threads or default_threads()
        self.gpu_layers = gpu_layers
        self.flash_attn = use_flash_attention(flash_attn)
        self.n_batch = min(batch_size, self.n_ctx)
        started = time.perf_counter()
        self.model = LlamaModel(self.path, gpu_layers=gpu_layers, chat_template=self.info.chat_template)
        try:
            self.context: LlamaContext = self.model.context(
                n_ctx=self.n_ctx, n_batch=self.n_batch, threads=self.threads, flash_attn=self.flash_attn
            )
        except BaseException:
            self.model.close()
            raise
        self.kv_tokens: list[int] = []  # the tokens whose keys and values the cache holds, in order
        self._parallel: list[ParallelEngine] = []
        self.drafter: DraftModel | None = None
        if draft_model is not None:
            self.drafter = self._load_drafter(Path(draft_model))
        self.load_time = time.perf_counter() - started
        # a busy CPU: fewer threads (see ThreadGovernor); not when the user chose a count, nor
        # when the layers run on a GPU (steps are asynchronous there and the CPU mostly waits);
        # batches too: a draft's batch of a few tokens waits at the same barriers as a step
        # (measured: speculative replies at a fifth of the speed with 2 batch threads beside busy
        # processes), and so does a prompt
        self.governor = ThreadGovernor(self._set_threads, self.threads) if threads is None and not gpu_layers else None
        # backend sampling: with layers on a GPU the sampler chain runs in llama.cpp's graph and
        # only the drawn token comes back (no copy of the logits, no host pass over the vocabulary)
        self.offload_sampling = bool(gpu_layers)

    def _set_threads(self, n: int) -> None:
        self.context.set_threads(n, batch=n)
        if self.drafter is not None:
            self.drafter.context.set_threads(n, batch=n)

    def _load_drafter(self, path: Path) -> DraftModel:
        """The draft model (``--draft-model``): a small model with the same vocabulary, in a context of its own."""
        try:
            model = LlamaModel(path, gpu_layers=self.gpu_layers)
        except BaseException:
            self.close()
            raise
        # the same vocabulary: the same size and the same pieces (spot checks through the table)
        same = model.n_vocab == self.model.n_vocab and all(
            model.piece(t) == self.model.piece(t) for t in range(0, model.n_vocab, max(1, model.n_vocab // 64))
        )
        if not same:
            model.close()
            self.close()
            raise ModelError(f"the draft model {path.name} does not share {self.path.name}'s vocabulary")
        try:
            return DraftModel(model, n_ctx=self.n_ctx, n_batch=self.n_batch, threads=self.threads, flash_attn=self.flash_attn)
        except BaseException:
            model.close()
            self.close()
            raise

    def speculates(self, sampling: Sampling) -> bool:
        """Whether a reply with ``sampling`` drafts tokens: ``speculative`` True (prompt lookup, and
        the draft model if one is loaded), None (the draft model only, if one is loaded), False (never)."""
        if sampling.speculative is None:
            return self.drafter is not None
        return sampling.speculative

    # ------------------------------------------------------------ Engine

    @property
    def context_length(self) -> int:
        return self.n_ctx

    @property
    def bos(self) -> int:
        return self.model.bos

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """The model's tokens for ``text``."""
        return self.model.tokenize(text, add_bos=add_bos, special=special)

    def format(self, messages: Sequence[Message]) -> list[int]:
        """Prompt tokens for ``messages`` (the GGUF's chat template)."""
        return self.model.format(messages, self.n_ctx)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self.format(messages))

    def tokenize_count(self, text: str) -> int:
        return len(self.model.tokenize(text, add_bos=False, special=False))

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        return self.generate(self.format(messages), sampling)

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        return self.generate(self.model.raw_prompt(prompt, self.n_ctx), sampling)

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[Chunk]:
        """A reply continuing ``tokens`` (already formatted): text chunks, then one with the usage."""
        refuse_overflow(len(tokens), self.n_ctx)
        return self._run(tokens, sampling)

    # ------------------------------------------------------------ Batching

    def parallel(self, n: int, n_ctx: int | None = None) -> ParallelEngine:
        """An engine that runs up to ``n`` replies (of at most ``n_ctx`` tokens) at once on this
        model; the calling thread drives it (see ``engines.parallel``)."""
        engine = ParallelEngine(
            self.model,
            n,
            n_ctx=min(self.n_ctx, max(256, -(-n_ctx // 256) * 256)) if n_ctx else self.n_ctx,
            n_batch=self.n_batch,
            threads=self.threads,
            flash_attn=self.flash_attn,
            name=self.model_name,
            governed=self.governor is not None,
            on_close=self._parallel.remove,
        )
        self._parallel.append(engine)
        return engine

    def auto_parallel(self) -> int:
        """How many replies at once suit this model and device by default (see ``engines.parallel``)."""
        free = gpu_free_memory() if self.gpu_layers else 0
        return auto_parallel(self.info.kv_bytes_per_token, self.n_ctx, gpu_free=free)

    # ------------------------------------------------------------ Stateful (resume)

    def state_key(self) -> dict[str, Any]:
        """What a saved KV state is only valid for: this model file and these context settings."""
        st = self.path.stat()
        return {
            "model": str(self.path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "flash_attn": self.flash_attn,
            "llama_cpp": llama_cpp_version(),
        }

    def export_state(self) -> tuple[list[int], bytes]:
        """The cached tokens and llama.cpp's serialized KV cells for them."""
        return list(self.kv_tokens), self.context.export_state()

    def import_state(self, tokens: Sequence[int], data: bytes) -> bool:
        """Restore a state from ``export_state``; False (and an empty cache) if llama.cpp refuses it."""
        self.forget(0)
        if not tokens or len(tokens) >= self.n_ctx:
            return False
        if not self.context.import_state(data):
            return False
        self.kv_tokens = list(tokens)
        return True

    # ------------------------------------------------------------ the cache

    def forget(self, n: int = 0) -> None:
        """Drop KV cells from position ``n`` on, keeping the token record in step."""
        self.context.forget(0, n)
        del self.kv_tokens[n:]

    def prefill(self, tokens: Sequence[int]) -> int:
        """Make the cache hold ``tokens`` (reusing the prefix it holds) with logits for the last
        one; returns how many were reused. Ctrl-C stops a long prompt halfway (see
        ``LlamaContext.abort_on_signals``): the signal's handler runs on the way out."""
        reused = shared_prefix(self.kv_tokens, tokens)
        if reused == len(tokens):  # all cached: re-evaluate the last token to get fresh logits
            reused -= 1
        self.forget(reused)
        if self.governor is not None:
            self.governor.check()
        with self.context.abort_on_signals() as caught:
            # the last token alone, as when the rest of the prompt is cached: the first token's
            # logits (so a seeded reply) do not depend on what the cache held
            rc = self.context.decode(tokens[reused:], reused, last_alone=True)
        if rc != 0 and not caught:
            raise EngineError(f"llama.cpp could not evaluate the prompt (llama_decode returned {rc})")
        if rc == 0:
            self.kv_tokens.extend(tokens[reused:])
        return reused

    # ------------------------------------------------------------ the decode loop
    #
    # One sampler chain per reply, pieces decoded incrementally, and the next step submitted
    # before the text of the token just drawn is handed to the caller: with layers on a GPU,
    # llama_decode returns before the device is done, so detokenizing, stop strings and the
    # caller's rendering overlap the device's work (on a CPU the step computes in the call, and
    # nothing changes but the order). The reply's last token is not evaluated when the reply is
    # known to end with it (an end-of-generation token, the length limit, a stop string).
    #
    # Speculative decoding (``Sampling.speculative``, ``engines.speculative``): instead of one step
    # for the token just drawn, one batch evaluates it and a draft of the tokens that may follow,
    # with logits at every position. The reply's own sampler then draws at each position in turn
    # and the draft holds while the drawn token equals the drafted one; the first token that
    # differs is kept (it is what the model drew there) and the rest of the draft's cells are
    # dropped. The sampler draws exactly the positions it would have drawn token by token, in the
    # same order, so its state (the seeded generator, the repeat penalty's window, a grammar)
    # advances as it would have: the same seed gives the same reply with or without drafts.

    def _run(self, tokens: list[int], sampling: Sampling) -> Iterator[Chunk]:
        model, context, kv = self.model, self.context, self.kv_tokens
        seed = sampling.seed if sampling.seed is not None else secrets.randbelow(2**31)
        reply = ReplyState(sampling, len(tokens), self.n_ctx - len(tokens))
        usage = reply.usage
        speculate = self.speculates(sampling)
        # drafts are checked on the host, position by position: backend sampling draws one token a step
        offload = self.offload_sampling and not sampling.grammar and not speculate  # llama.cpp samples grammars on the host only
        sampler = model.sampler(sampling, seed, backend=offload)
        offloaded = offload and context.offload_sampler(sampler)
        governor, step, piece, is_eog = self.governor, context.step, model.piece, model.is_eog
        ignore_eos = sampling.ignore_eos
        lookup = PromptLookup(tokens) if speculate and sampling.speculative else None
        drafter = self.drafter if speculate else None
        length = DraftLength(GPU_RATIO, GPU_OVERHEAD) if self.gpu_layers else DraftLength(CPU_RATIO, CPU_OVERHEAD)
        clean = False
        try:
            usage.cached_tokens = self.prefill(tokens)
            index, draft, kind = -1, list[int](), ""  # where in the last batch the next token's logits are; what was drafted, how
            while True:
                token = sampler.sample(context, index)
                if index >= 0:  # checking a draft: the model's own token at each drafted position
                    if index < len(draft) and token == draft[index]:
                        usage.accepted_tokens += 1
                        kv.append(token)  # evaluated already, in the draft's batch
                        index += 1
                    else:  # the first disagreement (or the token after a draft taken whole) is kept
                        length.update(kind, len(draft), index)
                        context.forget(0, len(kv))  # the rejected rest of the draft
                        index, draft = -1, []
                if lookup is not None:
                    lookup.extend((token,))
                if not ignore_eos and is_eog(token):
                    usage.finish_reason = "stop"
                    break
                text = reply.add(piece(token))
                failed = False
                if index >= 0:
                    pass  # a drafted token the model agreed with: evaluated already
                elif not reply.ended:
                    if speculate:
                        length.tick()
                        room = min(reply.max_new - usage.completion_tokens, self.n_ctx - len(kv) - 2, self.n_batch - 1)
                        if lookup is not None and (draft := lookup.draft(DRAFT_MAX)):
                            kind = "run" if lookup.following else "lookup"
                            draft = draft[: length.next(kind, room)]
                        elif drafter is not None and (k := length.next("model", room)):
                            kind, draft = "model", drafter.draft([*kv, token], k)
                    if draft:
                        usage.draft_tokens += len(draft)
                        with context.abort_on_signals() as caught:  # Ctrl-C may stop the batch halfway
                            rc = context.decode([token, *draft], len(kv), logits="all")
                        if rc == 0:
                            kv.append(token)
                            index = 0
                        else:  # the context is full, or a signal whose handler returned stopped the batch
                            usage.finish_reason, failed = "interrupted" if caught else "context", True
                    elif step(token, len(kv)) != 0:
                        usage.finish_reason, failed = "context", True
                    else:
                        kv.append(token)
                    if governor is not None and not failed:
                        governor.step()
                if text:
                    yield Chunk(text, usage)
                if reply.ended or failed:
                    break
            if tail := reply.tail():
                yield Chunk(tail, usage)
            clean = True
        finally:
            if offloaded:
                context.offload_sampler(None)
            sampler.free()
            if not clean or speculate:  # interrupted, or a draft's rejected cells left: dropped
                self.forget(len(kv))
            reply.close()
        yield Chunk("", usage)

    # ------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Free the batched contexts, this context and the weights."""
        for engine in list(self._parallel):
            engine.close()
        if self.drafter is not None:
            self.drafter.close()
            self.drafter.model.close()
            self.drafter = None
        self.context.close()
        self.model.close()


_engines: dict[tuple[Any, ...], LocalEngine] = {}


def load_local_engine(path: Path, **options: Any) -> LocalEngine:
    """One model object per process: the same file and options return the loaded engine."""
    key = (str(Path(path).resolve()), tuple(sorted(options.items())))
    engine = _engines.get(key)
    if engine is None:
        if not _engines:
            atexit.register(release_engines)  # free llama.cpp before the interpreter tears down
        engine = LocalEngine(path, **options)
        _engines[key] = engine
    return engine


def release_engines() -> None:
    """Free loaded models (used by `/model` when switching, and at exit)."""
    for engine in _engines.values():
        engine.close()
    _engines.clear()
