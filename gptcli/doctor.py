"""`gptcli doctor`: what this machine, this llama.cpp build and this setup can do, and what is broken."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptcli.config import KEYS, Settings, config_path, data_dir
from gptcli.errors import GptcliError

if TYPE_CHECKING:
    from gptcli.engines.devices import Backend

OK, INFO, WARN, FAIL = "ok", "info", "warn", "fail"
INSTALL_HINT = "see the README's 'GPU offload' section (CMAKE_ARGS=\"-DGGML_CUDA=on\" or -DGGML_METAL=on)"


@dataclass
class Check:
    """One line of the report."""

    label: str
    value: str
    status: str = OK
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_settings() -> Settings:
    """Defaults only: what the report falls back on when the config file itself is broken."""
    return Settings(values={k: key.default for k, key in KEYS.items()}, sources={k: "default" for k in KEYS})


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def backend_info() -> Backend:
    """Ask llama.cpp about itself: version, CPU features, backends and devices (the llama layer)."""
    from gptcli.engines.devices import backend

    return backend()


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def device_checks(backend: Backend, gpu_layers: int) -> list[Check]:
    """What llama.cpp was built with and what it sees: its backends, each GPU with its memory,
    and whether ``gpu_layers`` can be honoured."""
    checks = [
        Check("llama-cpp-python", backend.llama_cpp_python, INFO),
        Check("llama.cpp", f"{backend.llama_cpp} (backends: {', '.join(backend.backends)})", INFO),
        Check("cpu features", " ".join(backend.cpu_features) or "none reported", INFO),
    ]
    for device in backend.gpus:
        memory = f"{_gib(device.memory_total)}, {_gib(device.memory_free)} free" if device.memory_total else "memory not reported"
        checks.append(Check("gpu", f"{device.backend} {device.name}: {device.description} ({memory})", INFO))
    wanted = "all" if gpu_layers == -1 else str(gpu_layers)
    if backend.gpu_offload and backend.gpus:
        where = ", ".join(f"{d.backend} {d.name}" for d in backend.gpus)
        if gpu_layers:
            checks.append(Check("gpu offload", f"gpu_layers = {wanted}, on {where}", OK))
        else:
            checks.append(Check("gpu offload", f"available on {where}; gpu_layers = 0 (CPU only)", INFO, "set gpu_layers = all to use it"))
    elif backend.gpu_offload:
        checks.append(
            Check("gpu offload", f"this build supports it ({', '.join(backend.backends)}) but no GPU is visible; gpu_layers = {wanted}", WARN if gpu_layers else INFO)
        )
    elif gpu_layers:
        checks.append(
            Check(
                "gpu offload",
                f"gpu_layers = {wanted} but this llama.cpp build is CPU-only",
                FAIL,
                f"nothing will be offloaded: reinstall llama-cpp-python with GPU support ({INSTALL_HINT}), or set gpu_layers = 0",
            )
        )
    else:
        checks.append(Check("gpu offload", "not supported by this build (CPU only)", INFO, INSTALL_HINT))
    return checks


def _writable(folder: Path) -> bool:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return os.access(probe, os.W_OK)


def run_checks(
    settings: Settings | None,
    config_problem: str | None = None,
    *,
    load: bool = True,
    open_engine: Callable[[Settings], Any] | None = None,
) -> list[Check]:
    """Every check, in report order. ``settings`` is ``None`` when they could not be read."""
    from gptcli import __version__, hub, models
    from gptcli.engines.threads import default_threads, physical_cores
    from gptcli.ggufinfo import read_gguf

    checks: list[Check] = [
        Check("gptcli", __version__, INFO),
        Check("python", f"{platform.python_version()} ({sys.executable})", INFO),
        Check("platform", f"{platform.system()} {platform.release()} {platform.machine()}", INFO),
    ]
    effective = settings or default_settings()

    # llama.cpp
    try:
        checks += device_checks(backend_info(), effective.gpu_layers)
    except Exception as exc:  # a missing or broken llama-cpp-python build
        checks.append(Check("llama-cpp-python", "cannot be imported", FAIL, f"{type(exc).__name__}: {exc}"))

    threads = effective.threads
    cores = physical_cores()
    default = (
        "default: one per physical core, fewer while other processes keep cores busy"
    )
    checks.append(Check("threads", f"{threads or default_threads()} ({'set' if threads else default}; {cores} physical, {os.cpu_count()} logical)", INFO))

    # paths
    cfg = config_path()
    if config_problem:
        checks.append(Check("config file", str(cfg), FAIL, config_problem))
    else:
        checks.append(Check("config file", f"{cfg}{'' if cfg.exists() else ' (none: defaults)'}", OK))
    data = data_dir()
    if _writable(data):
        checks.append(Check("data folder", str(data), OK))
    else:
        checks.append(Check("data folder", str(data), FAIL, "not writable: history and the model registry cannot be saved"))
    cache = hub.cache_dir()
    checks.append(Check("hub cache", str(cache), OK if _writable(cache) else WARN, None if _writable(cache) else "not writable: `models pull` will fail"))
    token = "set (hidden)" if os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") else "not set"
    # whether the Hub answers is not checked (doctor makes no request): say only what is set
    mode = "offline mode on (HF_HUB_OFFLINE)" if hub.offline_mode() else "offline mode off (network not checked)"
    checks.append(Check("hub", f"{hub.endpoint()}; {mode}; HF_TOKEN {token}", INFO))

    # registry
    registry = None
    try:
        registry = models.Registry.load()
        problems = [
            f"{name}: {path}" for name, m in sorted(registry.models.items()) for path in m.files if not path.exists()
        ]
        summary = f"{models.registry_path()} ({len(registry.models)} model{'s' if len(registry.models) != 1 else ''})"
        if problems:
            checks.append(Check("models", summary, WARN, "files missing: " + "; ".join(problems) + " (pull again or `gptcli models rm`)"))
        else:
            checks.append(Check("models", summary, OK))
    except GptcliError as exc:
        checks.append(Check("models", str(models.registry_path()), FAIL, str(exc)))

    # the engine: a remote server's model is not a file here
    from gptcli.engines import choose

    try:
        kind = choose.engine_kind(effective)
    except GptcliError as exc:
        checks.append(Check("engine", effective.engine or "local", FAIL, str(exc)))
        return checks
    if kind != "local":
        from gptcli.config import hide_credentials

        where = hide_credentials(effective.base_url or effective.engine)
        checks.append(Check("engine", f"remote ({where}); model {effective.model or 'chosen by the server'}", INFO))
        return checks

    # the default model, loaded
    spec = effective.model
    origin = {"flag": "--model", "env": "GPTCLI_MODEL", "file": "config file"}.get(effective.sources.get("model", ""), "")
    if not origin:
        origin = "registry default" if registry is not None and registry.default else "embedded"
    try:
        ref = models.resolve_model(spec)
        info = read_gguf(ref.path)
        desc = f"{ref.name} ({origin}): {info.architecture}, {info.quantization}, {ref.path}"
        checks.append(Check("default model", desc, OK))
    except GptcliError as exc:
        checks.append(Check("default model", spec or "(default)", FAIL, str(exc)))
        return checks
    if load and open_engine is not None:
        started = time.perf_counter()
        try:
            engine = open_engine(effective.with_flags(ctx=512))
            from gptcli.engines import Sampling

            for _ in engine.complete("Hello", Sampling(temperature=0.0, max_tokens=1, seed=0)):
                pass
            checks.append(Check("model loads", f"yes, and generates ({time.perf_counter() - started:.2f} s)", OK))
        except GptcliError as exc:
            checks.append(Check("model loads", "no", FAIL, str(exc)))
        except Exception as exc:  # llama.cpp failures that are not ours to name
            checks.append(Check("model loads", "no", FAIL, f"{type(exc).__name__}: {exc}"))
    return checks


def problems(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]
