"""The local engine: a GGUF model run in-process by llama.cpp through llama-cpp-python.

This is the only module that imports ``llama_cpp``; it does so lazily, when a model is loaded.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import ctypes
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from gptcli.config import use_flash_attention
from gptcli.engines import Chunk, Message, Sampling, Usage
from gptcli.errors import ContextOverflowError, EngineError, ModelError
from gptcli.engines.llama import LogWriter as _LogWriter
from gptcli.engines.llama import bindings as _bindings
from gptcli.engines.llama import check_grammar
from gptcli.engines.llama import llama_cpp_version, recent_errors as _recent_errors
from gptcli.ggufinfo import GGUFInfo, read_gguf

_MARKER = re.compile(r"<\w*_\w*>|\[\w+\]")  # <start_of_image>, [multimodal]; not <table> or </td>


TEMPLATE_SECONDS = 5  # a chat template (code from the GGUF file) that runs longer is stopped


class _TimeUp(Exception):
    pass


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Interrupt pure-Python work (Jinja rendering) after ``seconds``; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_alarm(signum: int, frame: Any) -> None:
        raise _TimeUp

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def physical_cores() -> int:
    """Physical CPU cores (llama.cpp runs best with one thread per core)."""
    try:
        cores = set()
        base = Path("/sys/devices/system/cpu")
        for topo in base.glob("cpu[0-9]*/topology"):
            pkg = (topo / "physical_package_id").read_text().strip()
            core = (topo / "core_id").read_text().strip()
            cores.add((pkg, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2 if (os.cpu_count() or 1) > 4 else os.cpu_count() or 1)


def default_context(info: GGUFInfo, requested: int | None) -> int:
    """``--ctx`` if given, else min(the model's training context, 4096); always a multiple of 256."""
    if requested:
        return requested
    trained = info.context_length or 4096
    size = min(trained, 4096)
    return max(256, size // 256 * 256)


def _set_flash_attention(params: Any, on: bool) -> None:
    """llama.cpp's context parameter: ``flash_attn_type`` (1 on, 0 off), ``flash_attn`` before it."""
    if hasattr(params, "flash_attn_type"):
        params.flash_attn_type = 1 if on else 0
    else:
        params.flash_attn = on


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


class _ChatTemplate:
    """A GGUF chat template (Jinja), rendered the way llama-cpp-python's ``Jinja2ChatFormatter``
    and Hugging Face's transformers do: sandboxed, trimmed blocks, loop controls, ``{% generation %}``
    ignored, ``tojson`` without ASCII escapes, ``raise_exception`` and ``strftime_now``."""

    def __init__(self, template: str, *, eos_token: str, bos_token: str) -> None:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        class IgnoreGenerationTags(jinja2.ext.Extension):
            tags = {"generation"}

            def parse(self, parser: Any) -> Any:
                parser.stream.skip(1)
                return parser.parse_statements(("name:endgeneration",), drop_needle=True)

        environment = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        self._template = environment.from_string(template)
        self.eos_token, self.bos_token = eos_token, bos_token

    def render(self, messages: list[Message]) -> str:
        def raise_exception(message: str) -> None:
            raise ValueError(message)

        return self._template.render(
            messages=messages,
            eos_token=self.eos_token,
            bos_token=self.bos_token,
            raise_exception=raise_exception,
            add_generation_prompt=True,
            strftime_now=lambda f: time.strftime(f),
        )


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
    import json

    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class LocalEngine:
    """Chat with a GGUF model in this process; the model is loaded once and reused across turns."""

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
    ) -> None:
        self.path = Path(path)
        self.info = read_gguf(self.path)  # a broken file is an error here, never an abort in C
        self.model_name = name or self.path.name
        self.n_ctx = default_context(self.info, ctx)
        if fit and not ctx:  # only what the caller will use: a smaller context loads faster
            self.n_ctx = min(self.n_ctx, max(256, -(-fit // 256) * 256))
        self.threads = threads or physical_cores()
        self.flash_attn = use_flash_attention(flash_attn, gpu_layers)
        C = _bindings()
        self._llama_cpp = C
        _recent_errors.clear()
        started = time.perf_counter()
        model_params = C.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if gpu_layers == -1 else gpu_layers
        context_params = C.llama_context_default_params()
        context_params.n_ctx = self.n_ctx
        context_params.n_batch = context_params.n_ubatch = min(batch_size, self.n_ctx)
        context_params.n_threads = context_params.n_threads_batch = self.threads
        _set_flash_attention(context_params, self.flash_attn)
        self._model = self._ctx = None
        with contextlib.redirect_stderr(_LogWriter()), contextlib.redirect_stdout(_LogWriter()):
            self._model = C.llama_model_load_from_file(str(self.path).encode("utf-8"), model_params)
            if self._model:
                self._ctx = C.llama_init_from_model(self._model, context_params)
        if not self._model or not self._ctx:
            what = "model" if not self._model else f"context of {self.n_ctx} tokens for"
            if self._model:
                C.llama_model_free(self._model)
            why = _recent_errors[-1] if _recent_errors else "llama.cpp refused it"
            raise ModelError(f"cannot load {what} {self.path}: {why}")
        self.load_time = time.perf_counter() - started
        self._vocab = C.llama_model_get_vocab(self._model)
        self._bos = C.llama_vocab_bos(self._vocab)
        self._eos = C.llama_vocab_eos(self._vocab)
        self._n_vocab = C.llama_vocab_n_tokens(self._vocab)
        self._n_batch = min(batch_size, self.n_ctx)
        self._batch = C.llama_batch_init(self._n_batch, 0, 1)
        self._caught_signals: list[int] = []
        caught = self._caught_signals
        self._abort_callback = C.ggml_abort_callback(lambda data: bool(caught))
        self._no_abort_callback = C.ggml_abort_callback()  # NULL
        self._kv_tokens: list[int] = []  # the tokens whose keys and values the cache holds, in order
        self._pieces: dict[int, bytes] = {}
        self._markers: list[int] | None = None  # see _marker_tokens
        self._max_piece_bytes: int | None = None
        self._parallel: list[Any] = []
        try:
            self._formatter = self._make_formatter()
        except BaseException:
            self.close()  # a broken chat template: the weights are not kept alive for nothing
            raise

    def parallel(self, n: int, n_ctx: int | None = None) -> Any:
        """An engine that runs up to ``n`` replies (of at most ``n_ctx`` tokens) at once on this model.

        See ``engines.parallel``; this thread drives it.
        """
        from gptcli.engines.parallel import ParallelEngine

        engine = ParallelEngine(self, n, n_ctx)
        self._parallel.append(engine)
        return engine

    def auto_parallel(self) -> int:
        """How many replies at once suit this model and device by default (see ``engines.parallel``)."""
        from gptcli.engines.parallel import auto_parallel

        return auto_parallel(self)

    def close(self) -> None:
        """Free the batch, the context and the weights (after any parallel contexts on them)."""
        for engine in list(self._parallel):
            engine.close()
        C = self._llama_cpp
        if self._batch is not None:
            C.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            C.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            C.llama_model_free(self._model)
            self._model = None

    # ------------------------------------------------------------ KV-cache state (resume)

    def state_key(self) -> dict[str, Any]:
        """What a saved KV state is only valid for: this model file and these context settings."""
        st = self.path.stat()
        return {
            "model": str(self.path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "n_ctx": self.n_ctx,
            "n_batch": self._n_batch,
            "flash_attn": self.flash_attn,
            "llama_cpp": llama_cpp_version(),
        }

    def export_state(self) -> tuple[list[int], bytes]:
        """The cached tokens and llama.cpp's serialized KV cells for them."""
        C = self._llama_cpp
        size = C.llama_state_seq_get_size(self._ctx, 0)
        buf = (ctypes.c_uint8 * size)()
        written = C.llama_state_seq_get_data(self._ctx, buf, size, 0)
        return list(self._kv_tokens), bytes(buf)[:written]

    def import_state(self, tokens: Sequence[int], data: bytes) -> bool:
        """Restore a state from ``export_state``; False (and an empty cache) if llama.cpp refuses it."""
        C = self._llama_cpp
        self._forget_after(0)
        if not tokens or len(tokens) >= self.n_ctx:
            return False
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if C.llama_state_seq_set_data(self._ctx, buf, len(data), 0) == 0:
            self._forget_after(0)
            return False
        self._kv_tokens = list(tokens)
        return True

    # ------------------------------------------------------------ formatting

    def _make_formatter(self) -> _ChatTemplate | None:
        template = self.info.chat_template
        if not template:
            return None
        try:
            return _ChatTemplate(template, eos_token=self._token_text(self._eos), bos_token=self._token_text(self._bos))
        except Exception as exc:
            raise ModelError(f"the chat template in {self.path} is broken: {exc}") from None

    def _token_text(self, token: int) -> str:
        if token == -1:
            return ""
        return self._llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "replace")

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """The model's tokens for ``text``."""
        C = self._llama_cpp
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
        return tokens[:n]

    def _longest_piece(self) -> int:
        """Bytes of the longest token's text: a text of N bytes takes at least N / this many tokens."""
        if self._max_piece_bytes is None:
            self._max_piece_bytes = max((len(self._piece(t)) for t in range(self._n_vocab)), default=1) or 1
        return self._max_piece_bytes

    def _refuse_if_surely_too_long(self, size: int) -> None:
        """A text far larger than the window is refused before llama.cpp spends seconds tokenizing it."""
        if size <= 32 * self.n_ctx:
            return
        at_least = size // self._longest_piece()
        if at_least >= self.n_ctx:
            raise ContextOverflowError(
                f"the input takes at least {at_least} tokens but the context window holds {self.n_ctx}"
                " (use a larger --ctx or a shorter input)"
            )

    def _format(self, messages: Sequence[Message]) -> list[int]:
        """Messages -> prompt tokens, through the chat template from the GGUF metadata."""
        self._refuse_if_surely_too_long(sum(len(m["content"].encode("utf-8", "replace")) for m in messages))
        if self._formatter is None:  # a base model: a plain transcript
            text = "".join(f"{m['role'].capitalize()}: {m['content']}\n" for m in messages) + "Assistant:"
            return self.tokenize(text, add_bos=True, special=False)
        try:
            with _time_limit(TEMPLATE_SECONDS):
                prompt = self._formatter.render(list(messages))
        except _TimeUp:
            raise ModelError(
                f"the model's chat template ran for more than {TEMPLATE_SECONDS} s and was stopped"
            ) from None
        except RecursionError:
            raise ModelError("the model's chat template recursed without end") from None
        except Exception as exc:  # the template runs in Jinja's sandbox; any failure is the model's
            raise ModelError(f"the model's chat template failed: {exc}") from None
        # as llama-cpp-python's Jinja2ChatFormatter does: a template writes its own BOS, or has none
        return self.tokenize(prompt, add_bos=False, special=True)

    # ------------------------------------------------------------ Engine

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._format(messages))

    def tokenize_count(self, text: str) -> int:
        return len(self.tokenize(text, add_bos=False, special=False))

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        return self._generate(self._format(messages), sampling)

    def complete(self, prompt: str, sampling: Sampling) -> Iterator[Chunk]:
        return self._generate(self._prompt_tokens(prompt), sampling)

    def _prompt_tokens(self, prompt: str) -> list[int]:
        """A raw prompt's tokens (no chat template), refusing one far too long before tokenizing."""
        self._refuse_if_surely_too_long(len(prompt.encode("utf-8", "replace")))
        return self.tokenize(prompt, add_bos=True, special=False)

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            piece = buf.raw[:n]
            self._pieces[token] = piece
        return piece

    def _generate(self, tokens: list[int], sampling: Sampling) -> Iterator[Chunk]:
        refuse_overflow(len(tokens), self.n_ctx)
        return self._run(tokens, sampling)

    # ------------------------------------------------------------ the decode loop
    #
    # A loop of our own over llama.cpp's C API instead of ``Llama.generate``: one reusable
    # one-token batch, one sampler chain per reply, pieces decoded incrementally. Its cost per
    # token does not grow with the reply, and the KV cache keeps the longest shared prefix of
    # the previous prompt + reply, so the next turn of a chat only evaluates what is new.

    def _cached_prefix(self, tokens: Sequence[int]) -> int:
        return shared_prefix(self._kv_tokens, tokens)

    def _make_sampler(self, sampling: Sampling, seed: int) -> Any:
        """A llama.cpp sampler chain: top-k first, so the repeat penalty scans 40 tokens, not the vocabulary."""
        C = self._llama_cpp
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            C.llama_sampler_chain_add(chain, sampler)

        if sampling.grammar:  # first: the rest of the chain only ever sees tokens the grammar allows
            try:
                add(check_grammar(self._vocab, sampling.grammar))
            except BaseException:
                C.llama_sampler_free(chain)
                raise
        if markers := self._marker_tokens():
            biases = (C.llama_logit_bias * len(markers))(*(C.llama_logit_bias(token, float("-inf")) for token in markers))
            add(C.llama_sampler_init_logit_bias(self._n_vocab, len(markers), biases))
        if sampling.top_k > 0:
            add(C.llama_sampler_init_top_k(sampling.top_k))
        if sampling.repeat_penalty != 1.0:
            add(C.llama_sampler_init_penalties(self._n_vocab, 64, sampling.repeat_penalty, 0.0, 0.0))
        if sampling.temperature <= 0:
            add(C.llama_sampler_init_greedy())
            return chain
        if sampling.top_p < 1.0:
            add(C.llama_sampler_init_top_p(sampling.top_p, 1))
        if sampling.min_p > 0:
            add(C.llama_sampler_init_min_p(sampling.min_p, 1))
        add(C.llama_sampler_init_temp(sampling.temperature))
        add(C.llama_sampler_init_dist(seed))
        return chain

    def _marker_tokens(self) -> list[int]:
        """Tokens a text reply must never hold: user-defined tokens that mark other media, such as
        Gemma 3's ``<start_of_image>`` and ``[multimodal]`` (llama.cpp prints them as text, and a
        base model writes them after "Here is a picture:"). Other user-defined tokens are text
        (runs of spaces or newlines, HTML tags) and stay. Found once, at the first reply."""
        if self._markers is None:
            C, vocab = self._llama_cpp, self._vocab
            attr, user_defined = C.llama_vocab_get_attr, C.LLAMA_TOKEN_ATTR_USER_DEFINED
            self._markers = [
                token
                for token in range(self._n_vocab)
                if attr(vocab, token) & user_defined and _MARKER.fullmatch(C.llama_vocab_get_text(vocab, token).decode("utf-8", "replace"))
            ]
        return self._markers

    def _forget_after(self, n: int) -> None:
        """Drop KV cells from position ``n`` on, keeping our token record in step."""
        C = self._llama_cpp
        C.llama_memory_seq_rm(C.llama_get_memory(self._ctx), 0, n, -1)
        del self._kv_tokens[n:]

    @contextlib.contextmanager
    def _signals_abort_compute(self, ctx: Any = None) -> Iterator[list[int]]:
        """Let Ctrl-C (and SIGTERM) stop llama.cpp in the middle of evaluating a prompt.

        Python runs signal handlers only between bytecodes, so a signal arriving while
        ``llama_decode`` computes a batch would wait for the whole batch (seconds; minutes for a
        large model on a CPU). For the duration, the handlers only note the signal, and llama.cpp's
        abort callback, called between graph nodes on this thread, reads the note; the original
        handler runs once the call has returned. Yields the list of signals noted.
        """
        caught = self._caught_signals
        caught.clear()
        if threading.current_thread() is not threading.main_thread():
            yield caught
            return
        ctx = ctx or self._ctx
        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, OSError):
                previous[signum] = signal.signal(signum, lambda signum, frame: caught.append(signum))
        self._llama_cpp.llama_set_abort_callback(ctx, self._abort_callback, None)
        try:
            yield caught
        finally:
            # none at all while generating: a Python callback there would run signal handlers
            # (Ctrl-C's KeyboardInterrupt) inside llama.cpp, where they cannot propagate
            self._llama_cpp.llama_set_abort_callback(ctx, self._no_abort_callback, None)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if caught:
                _deliver(caught[0], previous.get(caught[0]))

    def _decode(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after what the cache holds, in batches; logits for the last one only."""
        with self._signals_abort_compute() as caught:
            self._decode_batches(tokens, caught)

    def _decode_batches(self, tokens: Sequence[int], caught: list[int]) -> None:
        C = self._llama_cpp
        batch_size = self._n_batch
        for start in range(0, len(tokens), batch_size):
            part = tokens[start : start + batch_size]
            batch = self._batch
            base = len(self._kv_tokens)
            for i, tok in enumerate(part):
                batch.token[i] = tok
                batch.pos[i] = base + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = False
            batch.n_tokens = len(part)
            batch.logits[len(part) - 1] = start + len(part) == len(tokens)
            rc = C.llama_decode(self._ctx, batch)
            if rc != 0:
                self._forget_after(base)
                if caught:  # aborted by a signal: its own handler runs on the way out
                    return
                raise EngineError(f"llama.cpp could not evaluate the prompt (llama_decode returned {rc})")
            self._kv_tokens.extend(part)

    def _prepare(self, tokens: list[int]) -> int:
        """Reuse the cached prefix, evaluate the rest; returns how many prompt tokens were reused."""
        reused = self._cached_prefix(tokens)
        if reused == len(tokens):  # all cached: re-evaluate the last token to get fresh logits
            reused -= 1
        self._forget_after(reused)
        self._decode(tokens[reused:])
        return reused

    def _run(self, tokens: list[int], sampling: Sampling) -> Iterator[Chunk]:
        C = self._llama_cpp
        seed = sampling.seed if sampling.seed is not None else secrets.randbelow(2**31)
        reply = ReplyState(sampling, len(tokens), self.n_ctx - len(tokens))
        usage = reply.usage
        sampler = self._make_sampler(sampling, seed)
        ctx, vocab, sample = self._ctx, self._vocab, C.llama_sampler_sample
        is_eog = (lambda v, t: False) if sampling.ignore_eos else C.llama_vocab_is_eog
        one = self._batch
        clean = False
        try:
            usage.cached_tokens = self._prepare(tokens)
            while True:
                token = sample(sampler, ctx, -1)
                if is_eog(vocab, token):
                    usage.finish_reason = "stop"
                    break
                if text := reply.add(self._piece(token)):
                    yield Chunk(text, usage)
                if reply.ended:
                    break
                pos = len(self._kv_tokens)
                one.token[0], one.pos[0], one.n_seq_id[0], one.logits[0], one.n_tokens = token, pos, 1, True, 1
                one.seq_id[0][0] = 0
                if C.llama_decode(ctx, one) != 0:
                    usage.finish_reason = "context"
                    break
                self._kv_tokens.append(token)
            if tail := reply.tail():
                yield Chunk(tail, usage)
            clean = True
        finally:
            C.llama_sampler_free(sampler)
            if not clean:  # interrupted: whatever llama.cpp holds beyond our record is dropped
                self._forget_after(len(self._kv_tokens))
            reply.close()
        yield Chunk("", usage)


def _deliver(signum: int, handler: Any) -> None:
    """Run what ``handler`` (as ``signal.signal`` returned it) would have done with ``signum``."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)


class _StopFilter:
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
        self.stops = _StopFilter(sampling.stop)
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


__all__ = ["LocalEngine", "load_local_engine", "EngineError"]
