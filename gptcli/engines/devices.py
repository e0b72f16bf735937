"""Backend information: llama.cpp's version, CPU features, backends and devices (ggml's registry)."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

from gptcli.engines.llama import bindings, llama_cpp_version


@dataclass(frozen=True)
class Device:
    """A compute device llama.cpp can use (what ``doctor`` reports)."""

    name: str
    description: str
    kind: str  # cpu | gpu | igpu | accel
    backend: str  # CPU, CUDA, Metal, Vulkan, ...
    memory_free: int  # bytes (0 where the backend does not say)
    memory_total: int


@dataclass(frozen=True)
class Backend:
    """What the installed llama.cpp was built with and sees on this machine."""

    llama_cpp_python: str
    llama_cpp: str
    system_info: str
    cpu_features: list[str]
    backends: list[str]  # registered backends, CPU first: ["CPU"], ["CPU", "CUDA"], ...
    devices: list[Device]
    gpu_offload: bool

    @property
    def gpus(self) -> list[Device]:
        return [d for d in self.devices if d.kind in ("gpu", "igpu")]


_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


_ggml: Any = None


def _ggml_registry() -> Any:
    """ggml's backend registry functions (llama-cpp-python binds none of them), through the
    loaded libllama, which links ggml."""
    global _ggml
    if _ggml is None:
        lib = bindings()._lib
        p, size, char = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p
        for name, args, result in (
            ("ggml_backend_dev_count", [], size),
            ("ggml_backend_dev_get", [size], p),
            ("ggml_backend_dev_name", [p], char),
            ("ggml_backend_dev_description", [p], char),
            ("ggml_backend_dev_type", [p], ctypes.c_int),
            ("ggml_backend_dev_memory", [p, ctypes.POINTER(size), ctypes.POINTER(size)], None),
            ("ggml_backend_dev_backend_reg", [p], p),
            ("ggml_backend_reg_count", [], size),
            ("ggml_backend_reg_get", [size], p),
            ("ggml_backend_reg_name", [p], char),
        ):
            function = getattr(lib, name)
            function.argtypes, function.restype = args, result
        _ggml = lib
    return _ggml


def devices() -> list[Device]:
    """llama.cpp's device registry: every backend's devices, with their memory."""
    C = _ggml_registry()
    found = []
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    for i in range(int(C.ggml_backend_dev_count())):
        dev = C.ggml_backend_dev_get(i)
        free.value = total.value = 0
        C.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        reg = C.ggml_backend_dev_backend_reg(dev)
        found.append(
            Device(
                name=_text(C.ggml_backend_dev_name(dev)),
                description=_text(C.ggml_backend_dev_description(dev)),
                kind=_DEVICE_KINDS.get(int(C.ggml_backend_dev_type(dev)), "other"),
                backend=_text(C.ggml_backend_reg_name(reg)) if reg else "?",
                memory_free=int(free.value),
                memory_total=int(total.value),
            )
        )
    return found


def backend() -> Backend:
    """Ask llama.cpp about itself: version, CPU features, backends and devices."""
    C = bindings()
    text = _text(C.llama_print_system_info())
    features: list[str] = []
    for item in text.replace("\n", "|").split("|"):
        name, sep, value = item.partition("=")
        name = name.split(":")[-1].strip()
        if sep and value.strip() == "1" and name:
            features.append(name)
    try:
        version = _text(C.llama_version()) if hasattr(C, "llama_version") else "unknown"
    except Exception:
        version = "unknown"
    found = devices()
    names = []
    G = _ggml_registry()
    for i in range(int(G.ggml_backend_reg_count())):
        name = _text(G.ggml_backend_reg_name(G.ggml_backend_reg_get(i)))
        if name and name not in names:
            names.append(name)
    return Backend(
        llama_cpp_python=llama_cpp_version(),
        llama_cpp=version,
        system_info=text.strip(),
        cpu_features=features,
        backends=names or ["CPU"],
        devices=found,
        gpu_offload=bool(C.llama_supports_gpu_offload()),
    )


def gpu_free_memory() -> int:
    """Free bytes on the GPUs llama.cpp sees (0 without one)."""
    return sum(d.memory_free for d in devices() if d.kind in ("gpu", "igpu"))
