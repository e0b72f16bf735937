"""Pick and open the engine the settings ask for (local llama.cpp, or a remote server)."""

from __future__ import annotations

from gptcli.config import Settings
from gptcli.engines import Engine
from gptcli.models import resolve_model


def open_engine(settings: Settings) -> Engine:
    """The engine for these settings; the local model is loaded once per process."""
    from gptcli.engines.local import load_local_engine

    ref = resolve_model(settings.model)
    return load_local_engine(
        ref.path,
        name=ref.name,
        ctx=settings.ctx,
        threads=settings.threads,
        gpu_layers=settings.gpu_layers,
        flash_attn=settings.flash_attn,
        batch_size=settings.batch_size,
    )
