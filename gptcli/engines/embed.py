"""Sentence embeddings through llama.cpp (the llama layer's pooled outputs): the ``Embedding`` capability."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from gptcli.engines.llama import LlamaContext, LlamaModel
from gptcli.engines.threads import default_threads
from gptcli.errors import EngineError


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
    the mean of its last hidden states. Texts longer than ``n_ctx`` tokens are cut there. Up to
    ``n_seq`` texts go in one ``llama_decode``, each as a sequence of its own (llama.cpp's compute
    buffer grows with ``n_ctx * n_seq``: 16 sequences of 512 reserved 1.6 GB for the 135M model).
    """

    def __init__(self, path: Path, *, threads: int | None = None, gpu_layers: int = 0, n_ctx: int = 512, n_seq: int = 4) -> None:
        self.path = Path(path)
        self.model_name = self.path.name
        self.n_ctx, self.n_seq = n_ctx, n_seq
        self.model = LlamaModel(self.path, gpu_layers=gpu_layers)
        try:
            self.context = LlamaContext(
                self.model,
                n_ctx=n_ctx * n_seq,
                n_batch=n_ctx * n_seq,
                n_seq=n_seq,
                threads=threads or default_threads(),
                flash_attn=False,
                unified=True,  # one cache for all: a batch is never split by sequence, so each pools whole
                pooling=_pooling_from(self.path),
            )
        except BaseException:
            self.model.close()
            raise
        self.dimensions = self.model.n_embd

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit-length vector per text, in order."""
        vectors: list[list[float]] = []
        group: list[list[int]] = []
        for text in texts:
            tokens = self.model.tokenize(text, add_bos=True, special=False)[: self.n_ctx]
            group.append(tokens or [self.model.bos if self.model.bos >= 0 else 0])
            if len(group) == self.n_seq:
                vectors += self._embed_group(group)
                group = []
        if group:
            vectors += self._embed_group(group)
        return vectors

    def _embed_group(self, group: list[list[int]]) -> list[list[float]]:
        context = self.context
        context.clear()
        n = 0
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                context.put(n, token, pos, seq, True)
                n += 1
        rc = context.submit(n)
        if rc != 0:
            raise EngineError(f"llama.cpp could not embed {len(group)} texts (llama_decode returned {rc})")
        out = []
        for seq in range(len(group)):
            vector = context.pooled(seq, self.dimensions)
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            out.append([x / norm for x in vector])
        return out

    def close(self) -> None:
        self.context.close()
        self.model.close()
