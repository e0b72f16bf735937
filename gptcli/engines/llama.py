"""The llama layer: the only code that imports ``llama_cpp`` (llama-cpp-python's ctypes bindings).

Everything else in gptcli reaches llama.cpp through the public names here: loading the bindings
(lazily, without the package's heavy ``__init__``), backend information, GBNF grammars from JSON
Schema, and sentence embeddings.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import json
import logging
import os
import re
import signal
import sys
import threading
import types
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gptcli.engines import Message, Sampling
from gptcli.engines.chat_template import ChatTemplate
from gptcli.errors import ContextOverflowError, EngineError, ModelError

log = logging.getLogger("gptcli.llama")

# llama.cpp's recent error lines, kept so a failed load can say why even when not --verbose
recent_errors: deque[str] = deque(maxlen=8)
_log_callback: Any = None  # kept alive: llama.cpp holds a raw pointer to it
_GGML_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level: NONE DEBUG INFO WARN ERROR (5: CONT, the last level)


def cpu_has_amx() -> bool:
    """Whether the CPU advertises Intel AMX (see ``bindings``)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_int8" in line.split()
    except OSError:
        pass
    return False


def bindings() -> Any:
    """llama-cpp-python's ctypes bindings (``llama_cpp.llama_cpp``), with llama.cpp's log routed
    to the ``gptcli.llama`` logger.

    Only the bindings: the package's ``__init__`` also imports its high-level half (``Llama``,
    chat formats, numpy), 75 ms at every command that loads a model, and the engine needs none of
    it. While the bindings load, a bare stand-in for the package takes its place in
    ``sys.modules``; it is removed afterwards, so a later ``import llama_cpp`` (``serve``) runs
    the real ``__init__``, which finds the bindings already loaded and shares them.

    On CPUs with AMX, llama.cpp's AMX matrix kernels (an "extra buffer type") crash the process
    with a general-protection fault in some virtual machines (seen with llama-cpp-python 0.3.36).
    Its default model parameters are wrapped to turn them off there (``llama-cpp-python``'s own
    ``Llama`` takes them from the same function); ``GPTCLI_EXTRA_BUFTS=1`` turns them back on.
    """
    global _log_callback
    C: Any = sys.modules.get("llama_cpp.llama_cpp")
    if C is None:
        if "llama_cpp" in sys.modules:
            import llama_cpp.llama_cpp as C
        else:
            spec = importlib.util.find_spec("llama_cpp")
            if spec is None or not spec.submodule_search_locations:
                raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python")
            stand_in = types.ModuleType("llama_cpp")
            stand_in.__path__ = list(spec.submodule_search_locations)
            sys.modules["llama_cpp"] = stand_in
            try:
                import llama_cpp.llama_cpp as C
            finally:
                if sys.modules.get("llama_cpp") is stand_in:
                    del sys.modules["llama_cpp"]

    if _log_callback is None:  # the first call: set up once
        if cpu_has_amx() and os.environ.get("GPTCLI_EXTRA_BUFTS") != "1":
            defaults = C.llama_model_default_params

            def model_params() -> Any:
                params = defaults()
                params.use_extra_bufts = False
                return params

            C.llama_model_default_params = model_params
        C.llama_backend_init()

        last_level = [logging.INFO]

        @C.llama_log_callback  # type: ignore[untyped-decorator]
        def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            py_level = last_level[0] if level == 5 else _GGML_LEVELS.get(level, logging.DEBUG)
            last_level[0] = py_level
            if py_level < logging.ERROR and not log.isEnabledFor(py_level):
                return  # ~2,000 debug lines a model load: not decoded unless --verbose shows them
            message = text.decode("utf-8", errors="replace").rstrip("\n")
            if not message:
                return
            if py_level >= logging.ERROR:
                recent_errors.append(message.strip())
            log.log(py_level, "%s", message)

        _log_callback = callback
        C.llama_log_set(callback, ctypes.c_void_p(0))
    return C


def import_llama_package() -> Any:
    """The whole llama_cpp package (``doctor``, ``serve``), on the bindings ``bindings`` set up."""
    C = bindings()
    import llama_cpp  # its _logger module sets a log callback of its own: ours goes back in

    C.llama_log_set(_log_callback, ctypes.c_void_p(0))
    # submodules loaded under the stand-in are not attributes of the real package yet
    for name, module in list(sys.modules.items()):
        parent, _, child = name.rpartition(".")
        if parent == "llama_cpp" and module is not None and not hasattr(llama_cpp, child):
            setattr(llama_cpp, child, module)
    return llama_cpp


def llama_cpp_version() -> str:
    """The installed llama-cpp-python's version, without importing the package."""
    try:
        from importlib.metadata import version

        return version("llama_cpp_python")
    except Exception:
        return "?"


class LogWriter(io.TextIOBase):
    """A file-like object that sends what llama-cpp-python prints to the logger."""

    def write(self, s: str) -> int:
        if s.strip():
            log.debug("%s", s.rstrip())
        return len(s)




# ---------------------------------------------------------------- the model


def _set_flash_attention(params: Any, on: bool) -> None:
    """llama.cpp's context parameter: ``flash_attn_type`` (1 on, 0 off), ``flash_attn`` before it."""
    if hasattr(params, "flash_attn_type"):
        params.flash_attn_type = 1 if on else 0
    else:
        params.flash_attn = on


_MARKER = re.compile(r"<\w*_\w*>|\[\w+\]")  # <start_of_image>, [multimodal]; not <table> or </td>


class LlamaModel:
    """Weights and vocabulary of one GGUF file, loaded by llama.cpp; contexts and samplers are made from it."""

    def __init__(self, path: Path, *, gpu_layers: int = 0, chat_template: str | None = None) -> None:
        C = bindings()
        self._C = C
        self.path = Path(path)
        self.gpu_layers = gpu_layers
        params = C.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if gpu_layers == -1 else gpu_layers
        recent_errors.clear()
        with contextlib.redirect_stderr(LogWriter()), contextlib.redirect_stdout(LogWriter()):
            self._model = C.llama_model_load_from_file(str(self.path).encode("utf-8"), params)
        if not self._model:
            why = recent_errors[-1] if recent_errors else "llama.cpp refused it"
            raise ModelError(f"cannot load model {self.path}: {why}")
        self._vocab = C.llama_model_get_vocab(self._model)
        self.bos = int(C.llama_vocab_bos(self._vocab))
        self.eos = int(C.llama_vocab_eos(self._vocab))
        self.n_vocab = int(C.llama_vocab_n_tokens(self._vocab))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._markers: list[int] | None = None
        self._max_piece_bytes: int | None = None
        self.template: ChatTemplate | None = None
        if chat_template:
            try:
                self.template = ChatTemplate(chat_template, eos_token=self.token_text(self.eos), bos_token=self.token_text(self.bos))
            except Exception as exc:
                self.close()  # a broken chat template: the weights are not kept alive for nothing
                raise ModelError(f"the chat template in {self.path} is broken: {exc}") from None

    # prompts

    def format(self, messages: Sequence[Message], n_ctx: int) -> list[int]:
        """Messages -> prompt tokens, through the chat template from the GGUF metadata (a base
        model without one gets a plain transcript)."""
        self._refuse_if_surely_too_long(sum(len(m["content"].encode("utf-8", "replace")) for m in messages), n_ctx)
        if self.template is None:
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
            return self.tokenize(text, add_bos=True, special=False)
        prompt = self.template.render(list(messages))
        # as llama-cpp-python's Jinja2ChatFormatter does: a template writes its own BOS, or has none
        return self.tokenize(prompt, add_bos=False, special=True)

    def raw_prompt(self, prompt: str, n_ctx: int) -> list[int]:
        """A raw prompt's tokens (no chat template), refusing one far too long before tokenizing."""
        self._refuse_if_surely_too_long(len(prompt.encode("utf-8", "replace")), n_ctx)
        return self.tokenize(prompt, add_bos=True, special=False)

    def _refuse_if_surely_too_long(self, size: int, n_ctx: int) -> None:
        """A text far larger than the window is refused before llama.cpp spends seconds tokenizing it."""
        if size <= 32 * n_ctx:
            return
        at_least = size // self.longest_piece()
        if at_least >= n_ctx:
            raise ContextOverflowError(
                f"the input takes at least {at_least} tokens but the context window holds {n_ctx}"
                " (use a larger --ctx or a shorter input)"
            )

    @property
    def n_embd(self) -> int:
        """The size of the model's output vectors (its embeddings)."""
        C = self._C
        return int(C.llama_model_n_embd_out(self._model) if hasattr(C, "llama_model_n_embd_out") else C.llama_model_n_embd(self._model))

    # vocabulary

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """The model's tokens for ``text``."""
        C = self._C
        data = text.encode("utf-8")
        room = len(data) + 2
        tokens = (C.llama_token * room)()
        n = C.llama_tokenize(self._vocab, data, len(data), tokens, room, add_bos, special)
        if n < 0:  # never for a text of n bytes, but the API allows it
            room = -n
            tokens = (C.llama_token * room)()
            n = C.llama_tokenize(self._vocab, data, len(data), tokens, room, add_bos, special)
            if n < 0:
                raise EngineError(f"llama.cpp could not tokenize a text of {len(data)} bytes")
        return list(tokens[:n])

    def piece(self, token: int) -> bytes:
        """The bytes ``token`` stands for in a reply (cached: the decode loop asks for every token)."""
        piece = self._pieces.get(token)
        if piece is None:
            C = self._C
            buf = ctypes.create_string_buffer(64)
            n = C.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = C.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            piece = buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def detokenize(self, tokens: Sequence[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def token_text(self, token: int) -> str:
        """A token's text as the vocabulary spells it ("" for none)."""
        if token == -1:
            return ""
        value = self._C.llama_vocab_get_text(self._vocab, token)
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends a generation (EOS, EOT, ...); cached."""
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(self._C.llama_vocab_is_eog(self._vocab, token))
        return eog

    def longest_piece(self) -> int:
        """Bytes of the longest token's text: a text of N bytes takes at least N / this many tokens."""
        if self._max_piece_bytes is None:
            self._max_piece_bytes = max((len(self.piece(t)) for t in range(self.n_vocab)), default=1) or 1
        return self._max_piece_bytes

    def marker_tokens(self) -> list[int]:
        """Tokens a text reply must never hold: user-defined tokens that mark other media, such as
        Gemma 3's ``<start_of_image>`` and ``[multimodal]`` (llama.cpp prints them as text, and a
        base model writes them after "Here is a picture:"). Other user-defined tokens are text
        (runs of spaces or newlines, HTML tags) and stay. Found once, at the first reply."""
        if self._markers is None:
            C, vocab = self._C, self._vocab
            attr, user_defined = C.llama_vocab_get_attr, C.LLAMA_TOKEN_ATTR_USER_DEFINED
            self._markers = [
                token
                for token in range(self.n_vocab)
                if attr(vocab, token) & user_defined and _MARKER.fullmatch(self.token_text(token))
            ]
        return self._markers

    # samplers and contexts

    def sampler(self, sampling: Sampling, seed: int, *, backend: bool = False) -> Sampler:
        """A sampler chain for one reply (see ``Sampler``); ``backend``: one to run in llama.cpp's graph."""
        return Sampler(self, sampling, seed, backend=backend)

    def context(
        self,
        *,
        n_ctx: int,
        n_batch: int,
        n_seq: int = 1,
        threads: int,
        flash_attn: bool,
        unified: bool = True,
    ) -> LlamaContext:
        """A context (KV cache) of ``n_ctx`` cells on this model; ``n_seq`` sequences share it."""
        return LlamaContext(self, n_ctx=n_ctx, n_batch=n_batch, n_seq=n_seq, threads=threads, flash_attn=flash_attn, unified=unified)

    def close(self) -> None:
        if self._model is not None:
            self._C.llama_model_free(self._model)
            self._model = None


class Sampler:
    """A llama.cpp sampler chain for one reply.

    Order: banned media markers, top-k (so the repeat penalty scans 40 tokens, not the
    vocabulary), penalties, then greedy, or top-p, min-p, temperature and a seeded draw.

    With a grammar, sampling is lazy, as llama.cpp's own ``common_sampler`` does: the token is
    drawn by the chain above, then checked against the grammar alone (one candidate: microseconds);
    only when the grammar refuses it is the token drawn again by a second chain whose first
    sampler is the grammar, which must test all 49,152 tokens of the vocabulary (tens of
    milliseconds a token on a CPU). Both chains are told every token chosen.

    ``backend``: the chain is meant for backend sampling (``LlamaContext.offload_sampler``). This
    llama.cpp's backend greedy sampler returns the position of the best candidate rather than
    its token when top-k ran before it (its ``backend_apply`` ignores the candidate list), so a
    greedy backend chain has no top-k: the argmax is the same but for the rare step where the
    repeat penalty pushes all 40 best tokens below the 41st.
    """

    def __init__(self, model: LlamaModel, sampling: Sampling, seed: int, *, backend: bool = False) -> None:
        C = self._C = model._C
        self.has_grammar = bool(sampling.grammar)
        self.chain: Any = None
        self.guarded: Any = None  # the chain with the grammar first (a grammar only)
        self._grammar: Any = None  # that chain's grammar sampler, to check one token
        try:
            self.chain = self._build(model, sampling, seed, backend, None)
            if sampling.grammar:
                self.guarded = self._build(model, sampling, seed, backend, sampling.grammar)
                self._grammar = C.llama_sampler_chain_get(self.guarded, self._grammar_at)
                self._one = (C.llama_token_data * 1)()
                self._candidates = C.llama_token_data_array(self._one, 1, -1, False)
        except BaseException:
            self.free()
            raise

    def _build(self, model: LlamaModel, sampling: Sampling, seed: int, backend: bool, grammar: str | None) -> Any:
        C = self._C
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        count = 0

        def add(sampler: Any) -> None:
            nonlocal count
            C.llama_sampler_chain_add(chain, sampler)
            count += 1

        try:
            if markers := model.marker_tokens():
                biases = (C.llama_logit_bias * len(markers))(*(C.llama_logit_bias(token, float("-inf")) for token in markers))
                add(C.llama_sampler_init_logit_bias(model.n_vocab, len(markers), biases))
            if grammar:
                self._grammar_at = count
                add(check_grammar(model._vocab, grammar))
            if sampling.top_k > 0 and not (backend and sampling.temperature <= 0):
                add(C.llama_sampler_init_top_k(sampling.top_k))
            if sampling.repeat_penalty != 1.0:
                add(C.llama_sampler_init_penalties(model.n_vocab, 64, sampling.repeat_penalty, 0.0, 0.0))
            if sampling.temperature <= 0:
                add(C.llama_sampler_init_greedy())
                return chain
            if sampling.top_p < 1.0:
                add(C.llama_sampler_init_top_p(sampling.top_p, 1))
            if sampling.min_p > 0:
                add(C.llama_sampler_init_min_p(sampling.min_p, 1))
            add(C.llama_sampler_init_temp(sampling.temperature))
            add(C.llama_sampler_init_dist(seed))
        except BaseException:
            C.llama_sampler_free(chain)
            raise
        return chain

    def sample(self, ctx: LlamaContext, index: int = -1) -> int:
        """Draw a token from the logits at ``index`` of the last batch (and accept it)."""
        C = self._C
        token = int(C.llama_sampler_sample(self.chain, ctx._ctx, index))
        if self.guarded is None:
            return token
        one = self._one[0]
        one.id, one.logit, one.p = token, 1.0, 0.0
        self._candidates.size, self._candidates.selected, self._candidates.sorted = 1, -1, False
        C.llama_sampler_apply(self._grammar, ctypes.byref(self._candidates))
        if one.logit != float("-inf"):  # the grammar allows it
            C.llama_sampler_accept(self.guarded, token)
            return token
        allowed = int(C.llama_sampler_sample(self.guarded, ctx._ctx, index))  # accepts it too
        C.llama_sampler_accept(self.chain, allowed)
        return allowed

    def accept(self, token: int) -> None:
        """Tell the chain ``token`` was chosen (penalties, grammar) without drawing it."""
        self._C.llama_sampler_accept(self.chain, token)
        if self.guarded is not None:
            self._C.llama_sampler_accept(self.guarded, token)

    def clone(self) -> Sampler:
        """A copy in the same state (speculative decoding tries a draft on a copy)."""
        C = self._C
        copy = object.__new__(Sampler)
        copy._C, copy.has_grammar = C, self.has_grammar
        copy.chain = C.llama_sampler_clone(self.chain)
        copy.guarded = copy._grammar = None
        if self.guarded is not None:
            copy.guarded = C.llama_sampler_clone(self.guarded)
            copy._grammar_at = self._grammar_at
            copy._grammar = C.llama_sampler_chain_get(copy.guarded, self._grammar_at)
            copy._one = (C.llama_token_data * 1)()
            copy._candidates = C.llama_token_data_array(copy._one, 1, -1, False)
        return copy

    def free(self) -> None:
        for name in ("chain", "guarded"):
            if getattr(self, name, None) is not None:
                self._C.llama_sampler_free(getattr(self, name))
                setattr(self, name, None)
        self._grammar = None


class LlamaContext:
    """One llama.cpp context: its KV cache, a reusable batch, decoding, state and abort on signals.

    ``decode`` evaluates tokens of one sequence (a prompt, in batches of ``n_batch``); ``submit``
    evaluates a prepared multi-sequence batch (``put`` fills it). The caller keeps track of which
    tokens each sequence's cells hold.
    """

    def __init__(
        self,
        model: LlamaModel,
        *,
        n_ctx: int,
        n_batch: int,
        n_seq: int,
        threads: int,
        flash_attn: bool,
        unified: bool,
        pooling: int | None = None,
    ) -> None:
        C = self._C = model._C
        self.model = model
        self.n_ctx, self.n_batch, self.n_seq, self.threads = n_ctx, n_batch, n_seq, threads
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = unified
        if pooling is not None:  # an embedding context: pooled vectors per sequence instead of logits
            params.embeddings = True
            params.pooling_type = pooling
        _set_flash_attention(params, flash_attn)
        recent_errors.clear()
        with contextlib.redirect_stderr(LogWriter()), contextlib.redirect_stdout(LogWriter()):
            self._ctx = C.llama_init_from_model(model._model, params)
        if not self._ctx:
            why = recent_errors[-1] if recent_errors else "llama.cpp refused it"
            raise ModelError(f"cannot make a context of {n_ctx} tokens for {model.path}: {why}")
        self._memory = C.llama_get_memory(self._ctx)
        self.batch = C.llama_batch_init(n_batch, 0, 1)
        self.caught: list[int] = []
        caught = self.caught
        self._abort = C.ggml_abort_callback(lambda data: bool(caught))
        self._no_abort = C.ggml_abort_callback()  # NULL
        self._decode = C.llama_decode
        self._samplers: dict[int, Sampler] = {}

    # one sequence

    def decode(self, tokens: Sequence[int], start: int, seq: int = 0, *, logits: str = "last", last_alone: bool = False) -> int:
        """Evaluate ``tokens`` at positions ``start``... of sequence ``seq``, in batches of ``n_batch``.

        ``logits``: "last" (for the next token) or "all" (for checking a draft). ``last_alone``: the
        last token in a batch of its own, so its logits are a single step's whatever came before it
        (llama.cpp's CPU attention rounds a batch differently from a single step: tiled from 64
        tokens, and from 512 cells the single step splits the window over threads).
        Returns llama.cpp's code: 0 done, 2 aborted (by a signal; see ``abort_on_signals``), else an
        error. On a failure the cells of this call are dropped again.
        """
        batch, n_batch = self.batch, self.n_batch
        every = logits == "all"
        body = len(tokens) - 1 if last_alone and tokens else len(tokens)
        parts = [(first, tokens[first : min(first + n_batch, body)]) for first in range(0, body, n_batch)]
        if body < len(tokens):
            parts.append((body, tokens[body:]))
        for first, part in parts:
            for i, token in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = start + first + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = every
            batch.n_tokens = len(part)
            batch.logits[len(part) - 1] = True if every else first + len(part) == len(tokens)
            rc = int(self._decode(self._ctx, batch))
            if rc != 0:
                self.forget(seq, start)
                return rc
        return 0

    def step(self, token: int, pos: int, seq: int = 0) -> int:
        """Evaluate one generated token (logits kept); llama.cpp's return code."""
        batch = self.batch
        batch.token[0], batch.pos[0], batch.n_seq_id[0], batch.logits[0], batch.n_tokens = token, pos, 1, True, 1
        batch.seq_id[0][0] = seq
        return int(self._decode(self._ctx, batch))

    # many sequences

    def put(self, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
        """Set entry ``i`` of the batch (for ``submit``)."""
        batch = self.batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits

    def submit(self, n: int) -> int:
        """Evaluate the first ``n`` entries of the batch; llama.cpp's return code."""
        self.batch.n_tokens = n
        return int(self._decode(self._ctx, self.batch))

    def mark_logits(self, i: int) -> None:
        self.batch.logits[i] = True

    def logits(self, index: int = -1) -> list[float]:
        """The logits at ``index`` of the last batch (one per vocabulary entry)."""
        ptr = self._C.llama_get_logits_ith(self._ctx, index)
        return list(ptr[: self.model.n_vocab])

    def pooled(self, seq: int, size: int) -> list[float]:
        """The pooled embedding of sequence ``seq`` after the last batch (an embedding context)."""
        ptr = self._C.llama_get_embeddings_seq(self._ctx, seq)
        if not ptr:
            raise EngineError("llama.cpp returned no pooled embedding")
        return list(ptr[:size])

    # cells

    def clear(self) -> None:
        """Empty every sequence's cells."""
        self._C.llama_memory_clear(self._memory, True)

    def forget(self, seq: int, start: int, end: int = -1) -> None:
        """Drop sequence ``seq``'s cells from position ``start`` (to ``end``; -1: all after)."""
        self._C.llama_memory_seq_rm(self._memory, seq, start, end)

    def export_state(self, seq: int = 0) -> bytes:
        """llama.cpp's serialized cells of ``seq``."""
        C = self._C
        size = C.llama_state_seq_get_size(self._ctx, seq)
        buf = (ctypes.c_uint8 * size)()
        written = C.llama_state_seq_get_data(self._ctx, buf, size, seq)
        return bytes(buf)[:written]

    def import_state(self, data: bytes, seq: int = 0) -> bool:
        """Restore ``export_state``'s bytes; False if llama.cpp refuses them (the cells are then empty)."""
        C = self._C
        self.forget(seq, 0)
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if C.llama_state_seq_set_data(self._ctx, buf, len(data), seq) == 0:
            self.forget(seq, 0)
            return False
        return True

    # settings

    def set_threads(self, n: int, batch: int | None = None) -> None:
        """Threads for one-token steps from now on, and for batches (prompts, drafts) ``batch``
        (None: the count the context was made with)."""
        self._C.llama_set_n_threads(self._ctx, n, batch or self.threads)

    def offload_sampler(self, sampler: Sampler | None, seq: int = 0) -> bool:
        """Run ``sampler``'s chain inside llama.cpp's graph, on the device that holds the output
        layer (backend sampling), so only the drawn token comes back; ``None`` undoes it. False
        when llama.cpp cannot (a grammar, a split model): sampling then stays on the host."""
        chain = sampler.chain if sampler is not None else None
        ok = bool(self._C.llama_set_sampler(self._ctx, seq, chain))
        if ok and sampler is not None:
            self._samplers[seq] = sampler
        else:
            self._samplers.pop(seq, None)
        return ok and sampler is not None

    @contextlib.contextmanager
    def abort_on_signals(self) -> Iterator[list[int]]:
        """Let Ctrl-C (and SIGTERM) stop llama.cpp in the middle of evaluating a batch.

        Python runs signal handlers only between bytecodes, so a signal arriving while
        ``llama_decode`` computes a batch would wait for the whole batch (seconds; minutes for a
        large model on a CPU). For the duration, the handlers only note the signal, and llama.cpp's
        abort callback, called between graph nodes on this thread, reads the note; the original
        handler runs once the call has returned. Yields the list of signals noted. Off the main
        thread (where Python delivers no signals) it does nothing.
        """
        caught = self.caught
        caught.clear()
        if threading.current_thread() is not threading.main_thread():
            yield caught
            return
        previous: dict[int, Any] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, lambda signum, frame: caught.append(signum))
        self._C.llama_set_abort_callback(self._ctx, self._abort, None)
        try:
            yield caught
        finally:
            # none at all while generating: a Python callback there would run signal handlers
            # (Ctrl-C's KeyboardInterrupt) inside llama.cpp, where they cannot propagate
            self._C.llama_set_abort_callback(self._ctx, self._no_abort, None)
            for number, handler in previous.items():
                signal.signal(number, handler)
            if caught:
                _deliver(caught[0], previous.get(caught[0]))

    def close(self) -> None:
        C = self._C
        for seq in list(self._samplers):
            self.offload_sampler(None, seq)
        if self.batch is not None:
            C.llama_batch_free(self.batch)
            self.batch = None
        if self._ctx is not None:
            C.llama_free(self._ctx)
            self._ctx = None


def _deliver(signum: int, handler: Any) -> None:
    """Run what ``handler`` (as ``signal.signal`` returned it) would have done with ``signum``."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)


def json_schema_to_grammar(schema: dict[str, Any]) -> str:
    """GBNF for JSON that validates against ``schema``, by llama-cpp-python's converter (a port of
    llama.cpp's ``json_schema_to_grammar``). Raises ``ValueError`` for what it cannot express."""
    try:
        return str(_grammar_module().json_schema_to_gbnf(json.dumps(schema)))
    except (AssertionError, KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        raise ValueError(f"the schema cannot be turned into a grammar: {exc or type(exc).__name__}") from None


_grammar_converter: Any = None


def _grammar_module() -> Any:
    """llama-cpp-python's ``llama_grammar`` (pure Python, standard library only), loaded from its
    file: ``from llama_cpp import llama_grammar`` would run the package's ``__init__`` (numpy,
    ``Llama``, 75 ms) and its logger would take llama.cpp's log callback from ours."""
    global _grammar_converter
    if _grammar_converter is None:
        module = sys.modules.get("llama_cpp.llama_grammar")
        if module is None:
            spec = importlib.util.find_spec("llama_cpp")
            if spec is None or not spec.submodule_search_locations:
                raise ModelError("llama-cpp-python is not installed: pip install llama-cpp-python")
            path = Path(list(spec.submodule_search_locations)[0]) / "llama_grammar.py"
            file_spec = importlib.util.spec_from_file_location("gptcli_llama_grammar", path)
            assert file_spec is not None and file_spec.loader is not None
            module = importlib.util.module_from_spec(file_spec)
            file_spec.loader.exec_module(module)
        _grammar_converter = module
    return _grammar_converter


def check_grammar(vocab: Any, grammar: str) -> Any:
    """A llama.cpp grammar sampler for GBNF ``grammar`` (root rule ``root``); EngineError if llama.cpp rejects it."""
    C = bindings()
    sampler = C.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        why = f": {recent_errors[-1]}" if recent_errors else ""
        raise EngineError(f"llama.cpp cannot parse the grammar{why}")
    return sampler
