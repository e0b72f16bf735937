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
import math
import os
import sys
import types
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gptcli.errors import EngineError, ModelError

log = logging.getLogger("gptcli.llama")

# llama.cpp's recent error lines, kept so a failed load can say why even when not --verbose
recent_errors: deque[str] = deque(maxlen=8)
_log_callback: Any = None  # kept alive: llama.cpp holds a raw pointer to it
_GGML_LEVELS = {0: logging.CRITICAL, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.DEBUG}


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
    C = sys.modules.get("llama_cpp.llama_cpp")
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

        @C.llama_log_callback
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




def json_schema_to_grammar(schema: dict[str, Any]) -> str:
    """GBNF for JSON that validates against ``schema``, by llama-cpp-python's converter (a port of
    llama.cpp's ``json_schema_to_grammar``). Raises ``ValueError`` for what it cannot express."""
    bindings()  # the converter is a submodule: loaded under the same stand-in as the bindings
    from llama_cpp import llama_grammar

    try:
        return str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except (KeyError, TypeError, RecursionError, NotImplementedError) as exc:
        raise ValueError(f"the schema cannot be turned into a grammar: {exc}") from None


def check_grammar(vocab: Any, grammar: str) -> Any:
    """A llama.cpp grammar sampler for GBNF ``grammar`` (root rule ``root``); EngineError if llama.cpp rejects it."""
    C = bindings()
    sampler = C.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        why = f": {recent_errors[-1]}" if recent_errors else ""
        raise EngineError(f"llama.cpp cannot parse the grammar{why}")
    return sampler


def _pooling_from(path: Path) -> int:
    """The GGUF's own pooling (embedding models declare one), else mean pooling (a chat model)."""
    from gptcli.ggufinfo import read_gguf

    info = read_gguf(path)
    value = info.metadata.get(f"{info.architecture}.pooling_type") if info.metadata else None
    if isinstance(value, int) and value > 0:
        return value
    return 1  # LLAMA_POOLING_TYPE_MEAN


class Embedder:
    """Sentence vectors from a GGUF model through llama.cpp: one pooled, unit-length vector per text.

    An embedding model's GGUF names its pooling (mean, CLS, last); a chat model has none and gets
    the mean of its last hidden states. Texts longer than the window are cut at ``n_ctx`` tokens.
    Several texts go in one ``llama_decode``, each as a sequence of its own.
    """

    def __init__(self, path: Path, *, threads: int | None = None, gpu_layers: int = 0, n_ctx: int = 512, n_seq: int = 16) -> None:
        C = bindings()
        self._C = C
        self.path = Path(path)
        self.model_name = self.path.name
        pooling = _pooling_from(self.path)
        threads = threads or max(1, os.cpu_count() or 1)
        model_params = C.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if gpu_layers == -1 else gpu_layers
        params = C.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx * n_seq
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = threads
        params.embeddings = True
        params.pooling_type = pooling
        params.kv_unified = False
        self._model = self._ctx = None
        recent_errors.clear()
        with contextlib.redirect_stderr(LogWriter()), contextlib.redirect_stdout(LogWriter()):
            self._model = C.llama_model_load_from_file(str(self.path).encode("utf-8"), model_params)
            if self._model:
                self._ctx = C.llama_init_from_model(self._model, params)
        if not self._model or not self._ctx:
            self.close()
            why = recent_errors[-1] if recent_errors else "llama.cpp refused it"
            raise ModelError(f"cannot load the embedding model {self.path}: {why}")
        self._vocab = C.llama_model_get_vocab(self._model)
        self.n_ctx, self.n_seq = n_ctx, n_seq
        self.dimensions = int(C.llama_model_n_embd_out(self._model)) if hasattr(C, "llama_model_n_embd_out") else int(C.llama_model_n_embd(self._model))
        self._batch = C.llama_batch_init(n_ctx * n_seq, 0, 1)

    def tokenize(self, text: str) -> list[int]:
        C = self._C
        data = text.encode("utf-8")
        room = len(data) + 2
        tokens = (C.llama_token * room)()
        n = C.llama_tokenize(self._vocab, data, len(data), tokens, room, True, False)
        return list(tokens[: max(0, n)])[: self.n_ctx]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        vectors: list[list[float]] = []
        group: list[list[int]] = []
        for text in texts:
            group.append(self.tokenize(text) or self.tokenize(" "))
            if len(group) == self.n_seq:
                vectors += self._embed_group(group)
                group = []
        if group:
            vectors += self._embed_group(group)
        return vectors

    def _embed_group(self, group: list[list[int]]) -> list[list[float]]:
        C, batch = self._C, self._batch
        C.llama_memory_clear(C.llama_get_memory(self._ctx), True)
        n = 0
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        rc = C.llama_decode(self._ctx, batch)
        if rc != 0:
            raise EngineError(f"llama.cpp could not embed {len(group)} texts (llama_decode returned {rc})")
        out = []
        for seq in range(len(group)):
            ptr = C.llama_get_embeddings_seq(self._ctx, seq)
            if not ptr:
                raise EngineError("llama.cpp returned no pooled embedding")
            vector = ptr[: self.dimensions]
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            out.append([x / norm for x in vector])
        return out

    def close(self) -> None:
        C = self._C
        if getattr(self, "_batch", None) is not None:
            C.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            C.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            C.llama_model_free(self._model)
            self._model = None
