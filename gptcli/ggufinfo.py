"""Read and validate a GGUF file's header and metadata without loading its weights."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from gptcli.errors import ModelError

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4
MAX_ARRAY_KEPT = 64  # longer arrays (token lists) are skipped, their length kept
MAX_NESTING = 8  # arrays of arrays: no model nests deeper than 2; 5,000 deep was a RecursionError

# llama.cpp's own limits (src/llama-hparams.h, llama-model.cpp): past them it aborts the process
# (GGML_ASSERT) rather than failing the load, so the header check refuses them first
LLAMA_MAX_LAYERS = 512
LLAMA_MAX_EXPERTS = 1024
ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")
# far beyond any real model (10M tokens, 16,384 heads, 2^20 wide): larger only from a crafted file
MAX_CONTEXT_LENGTH = 1 << 26
MAX_HEADS = 1 << 14
MAX_WIDTH = 1 << 20
TENSOR_INFO_MIN_BYTES = 32  # name length 8, dimensions 4, one dimension 8, type 4, offset 8
METADATA_MIN_BYTES = 13  # key length 8, value type 4, a one-byte value

# value types
_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d",
}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")

# llama.cpp's LLAMA_FTYPE names for `general.file_type`
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class GGUFInfo:
    """What the header says about a model."""

    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return str(value) if value else None

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if isinstance(value, int) else None

    @property
    def block_count(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.block_count")
        return int(value) if isinstance(value, int) else None

    @property
    def kv_bytes_per_token(self) -> int | None:
        """Bytes of llama.cpp's default (f16) KV cache per token of context, if the metadata says."""
        arch, md = self.architecture, self.metadata
        layers, heads = self.block_count, md.get(f"{arch}.attention.head_count")
        kv_heads = md.get(f"{arch}.attention.head_count_kv", heads)
        width = md.get(f"{arch}.embedding_length")
        if isinstance(heads, list):
            heads = max(heads, default=0)
        if not layers or not isinstance(heads, int) or not heads or not isinstance(width, int):
            return None
        key = md.get(f"{arch}.attention.key_length") or width // heads
        value = md.get(f"{arch}.attention.value_length") or key
        per_layer = sum(kv_heads) / layers if isinstance(kv_heads, list) else kv_heads
        if not isinstance(per_layer, (int, float)) or not isinstance(key, int) or not isinstance(value, int):
            return None
        return int(layers * per_layer * (key + value) * 2)

    @property
    def chat_template(self) -> str | None:
        value = self.metadata.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value.strip() else None

    @property
    def parameter_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def quantization(self) -> str:
        ftype = self.metadata.get("general.file_type")
        if isinstance(ftype, int) and ftype in FILE_TYPES:
            return FILE_TYPES[ftype]
        return "unknown"

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "name": self.name,
            "parameters": self.parameter_count,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "layers": self.block_count,
            "chat_template": self.chat_template is not None,
            "size": self.file_size,
            "gguf_version": self.version,
        }


class _Reader:
    def __init__(self, f: BinaryIO, size: int, path: Path) -> None:
        self.f, self.size, self.path = f, size, path

    def fail(self, why: str) -> ModelError:
        return ModelError(f"{self.path} is not a usable GGUF model: {why}")

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise self.fail("the file is truncated")
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def count(self, what: str, item_bytes: int = 1) -> int:
        n = self.unpack("<Q")
        if n * item_bytes > self.size:  # every item takes at least item_bytes
            raise self.fail(f"absurd {what} ({n}) for a file of {self.size} bytes")
        return int(n)

    def string(self) -> str:
        n = self.count("string length")
        return self.read(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.count("string length")
        self.f.seek(n, 1)

    def skip_strings(self, n: int) -> None:
        """Skip an array of ``n`` strings (a tokenizer's 50,000 tokens) reading the file in large blocks."""
        f, size = self.f, self.size
        base, buf, pos = f.tell(), b"", 0
        for _ in range(n):
            if pos + 8 > len(buf):
                base += pos
                f.seek(base)
                buf, pos = f.read(1 << 20), 0
                if len(buf) < 8:
                    raise self.fail("the file is truncated")
            (length,) = _U64.unpack_from(buf, pos)
            if length > size:
                raise self.fail(f"absurd string length ({length}) for a file of {size} bytes")
            pos += 8 + length
        if base + pos > size:
            raise self.fail("the file is truncated")
        f.seek(base + pos)

    def value(self, vtype: int, keep: bool = True, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip_string()
            return None
        if vtype == _ARRAY:
            if depth >= MAX_NESTING:
                raise self.fail(f"metadata arrays nested more than {MAX_NESTING} deep")
            etype = self.unpack("<I")
            n = self.count("array length")
            if etype not in _SCALARS and etype not in (_STRING, _ARRAY):
                raise self.fail(f"unknown array element type {etype}")
            if n > MAX_ARRAY_KEPT and etype in _SCALARS:
                width = struct.calcsize(_SCALARS[etype])
                if n * width > self.size:
                    raise self.fail("an array runs past the end of the file")
                self.f.seek(n * width, 1)
                return {"array_length": n}
            kept = n <= MAX_ARRAY_KEPT
            if etype == _STRING and not kept:
                self.skip_strings(n)
                return {"array_length": n}
            items = [self.value(etype, keep=kept, depth=depth + 1) for _ in range(n)]
            return items if kept else {"array_length": n}
        raise self.fail(f"unknown metadata value type {vtype}")


def _tensor_nbytes(t: TensorInfo) -> int | None:
    from gptcli.compat import gguf_quant_sizes

    sizes = gguf_quant_sizes().get(t.ggml_type)
    if sizes is None:
        return None
    block, type_size = sizes
    return t.n_elements // block * type_size


def _numbers(value: Any) -> list[int] | None:
    """A count as llama.cpp reads it: one integer, or one per layer (short arrays are kept whole)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    return None


def _check_hyperparameters(info: GGUFInfo, r: _Reader) -> None:
    """Refuse the values llama.cpp's loader asserts on (an abort, exit 134) or that no real model has."""
    md, arch = info.metadata, info.architecture
    if md.get("split.no", 0) not in (0, None):
        return  # a later part of a split model: the first part carries the hyperparameters

    def get(name: str) -> list[int] | None:
        return _numbers(md.get(f"{arch}.{name}"))

    layers = get("block_count")
    if layers is not None and arch != "clip":
        if len(layers) != 1 or not 0 < layers[0] <= LLAMA_MAX_LAYERS:
            raise r.fail(f"it declares {layers[0] if len(layers) == 1 else layers} layers (llama.cpp allows 1 to {LLAMA_MAX_LAYERS})")
    n_layer = layers[0] if layers and len(layers) == 1 else LLAMA_MAX_LAYERS
    for name, limit in (("context_length", MAX_CONTEXT_LENGTH), ("embedding_length", MAX_WIDTH),
                        ("feed_forward_length", MAX_WIDTH * 4), ("attention.key_length", MAX_WIDTH),
                        ("attention.value_length", MAX_WIDTH), ("attention.head_count", MAX_HEADS),
                        ("attention.head_count_kv", MAX_HEADS)):
        values = get(name)
        if values is None:
            continue
        if len(values) > n_layer:
            raise r.fail(f"{arch}.{name} has {len(values)} values for {n_layer} layers")
        if any(not 0 <= v <= limit for v in values):
            raise r.fail(f"absurd {arch}.{name} ({max(values)}; at most {limit})")
    if (nextn := get("nextn_predict_layers")) and any(v > n_layer for v in nextn):
        raise r.fail(f"{arch}.nextn_predict_layers exceeds the {n_layer} layers")
    experts = (get("expert_count") or [0])[0]
    used = max(get("expert_used_count") or [0])
    groups = (get("expert_group_count") or [0])[0]
    group_used = (get("expert_group_used_count") or [0])[0]
    bad_experts = (
        not 0 <= experts <= LLAMA_MAX_EXPERTS
        or used > experts
        or (experts > 0 and (used <= 0 or groups >= experts))
        or (experts > 0 and groups > 1 and (experts % groups or not 0 < group_used < groups))
        or (experts == 0 and (used or groups))
    )
    if bad_experts:
        raise r.fail(
            f"inconsistent expert counts (experts {experts}, used {used}, groups {groups}); llama.cpp allows up to {LLAMA_MAX_EXPERTS}"
        )
    scaling = md.get(f"{arch}.rope.scaling.type")
    if scaling is not None and scaling not in ROPE_SCALING_TYPES:
        raise r.fail(f"unknown {arch}.rope.scaling.type {scaling!r} (llama.cpp knows {', '.join(ROPE_SCALING_TYPES)})")


def read_gguf(path: str | Path, *, tensors: bool = True) -> GGUFInfo:
    """Parse and sanity-check a GGUF header. Raises ``ModelError`` with a clear reason."""
    path = Path(path)
    try:
        size = path.stat().st_size
        f = path.open("rb")
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise ModelError(f"model path is a directory, not a GGUF file: {path}") from None
    except PermissionError:
        raise ModelError(f"cannot read model file (permission denied): {path}") from None
    with f:
        if path.is_dir():
            raise ModelError(f"model path is a directory, not a GGUF file: {path}")
        r = _Reader(f, size, path)
        if size < 24:
            raise r.fail("the file is empty or too small" if size < 4 else "the file is truncated")
        if r.read(4) != GGUF_MAGIC:
            raise r.fail("it does not start with the GGUF magic bytes")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise r.fail(f"unsupported GGUF version {version}")
        n_tensors = r.count("tensor count", TENSOR_INFO_MIN_BYTES)
        n_kv = r.count("metadata count", METADATA_MIN_BYTES)
        info = GGUFInfo(path=path, version=version, file_size=size)
        for _ in range(n_kv):
            key = r.string()
            vtype = r.unpack("<I")
            info.metadata[key] = r.value(vtype)
        _check_hyperparameters(info, r)
        if not tensors:
            return info
        for _ in range(n_tensors):
            name = r.string()
            n_dims = r.unpack("<I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise r.fail(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(r.unpack("<Q") for _ in range(n_dims))
            if any(d > size * 64 for d in shape):
                raise r.fail(f"tensor {name!r} has an absurd shape {shape}")
            info.tensors.append(TensorInfo(name, shape, r.unpack("<I"), r.unpack("<Q")))
        alignment = info.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise r.fail(f"bad alignment {alignment!r}")
        data_start = -(-f.tell() // alignment) * alignment
        for t in info.tensors:
            nbytes = _tensor_nbytes(t)
            if nbytes is None:
                raise r.fail(f"tensor {t.name!r} has unknown type {t.ggml_type}")
            if data_start + t.offset + nbytes > size:
                raise r.fail("the file is truncated (tensor data runs past its end)")
        return info
