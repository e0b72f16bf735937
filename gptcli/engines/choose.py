"""Pick and open the engine the settings ask for (local llama.cpp, or a remote server)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gptcli.config import Settings
from gptcli.engines import Engine
from gptcli.errors import ConfigError, UsageError
from gptcli.models import resolve_model

if TYPE_CHECKING:
    from gptcli.engines.remote import RemoteConfig

BUILTIN_ENGINES = ("local", "remote")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def open_engine(settings: Settings) -> Engine:
    """The engine for these settings; the local model is loaded once per process.

    With ``settings.fit`` (the most tokens this process will need), a local model's context is
    made no larger, unless ``--ctx`` (or the config) sets it: a one-shot command loads faster
    with a context of the size it needs.
    """
    remote = remote_config(settings)
    if remote is not None:
        from gptcli.engines.remote import open_remote_engine

        return open_remote_engine(remote)

    from gptcli.engines.local import load_local_engine

    ref = resolve_model(settings.model)
    fit = settings.fit if settings.sources.get("ctx", "default") == "default" else None
    return load_local_engine(
        ref.path,
        fit=fit,
        draft_model=resolve_model(settings.draft_model).path if settings.draft_model else None,
        name=ref.name,
        **settings.engine_options(),
    )


def engine_kind(settings: Settings) -> str:
    """'local' or 'remote' (a profile is remote): without contacting anything."""
    return "local" if remote_config(settings) is None else "remote"


def remote_config(settings: Settings) -> RemoteConfig | None:
    """The remote engine's configuration, or ``None`` for the local engine.

    ``--engine remote`` takes ``--base-url``/``--model``; ``--engine NAME`` an ``[engines.NAME]``
    profile, whose values flags override; ``--base-url`` alone implies the remote engine.
    """
    from gptcli.engines.remote import DEFAULT_API_KEY_ENV, DEFAULT_READ_TIMEOUT, RemoteConfig

    engine = settings.engine or "local"
    sources = settings.sources
    flag_ctx = settings.ctx if sources.get("ctx") == "flag" else None
    if engine == "local":
        if not (settings.base_url and sources.get("engine", "default") == "default"):
            return None
        engine = "remote"
    if engine == "remote":
        if not settings.base_url:
            raise UsageError("--engine remote needs --base-url URL (or base_url in the config file)")
        return RemoteConfig(
            base_url=settings.base_url,
            model=settings.model,
            api_key_env=DEFAULT_API_KEY_ENV,
            context_length=flag_ctx,
            fallback_context=settings.ctx,
            timeout=DEFAULT_READ_TIMEOUT,
        )
    profiles: Mapping[str, Mapping[str, Any]] = settings.profiles or {}
    profile = profiles.get(engine)
    if profile is None:
        known = ", ".join([*BUILTIN_ENGINES, *sorted(profiles)])
        where = f" in {settings.path}" if settings.path else ""
        raise ConfigError(f"unknown engine '{engine}': use one of {known} (profiles are [engines.NAME] tables{where})")
    values = _checked_profile(engine, profile)
    base_url = settings.base_url if sources.get("base_url") == "flag" else values.get("base_url")
    if not base_url:
        raise ConfigError(f"[engines.{engine}] has no base_url (example: base_url = \"http://127.0.0.1:8080/v1\")")
    model = settings.model if sources.get("model") == "flag" else values.get("model")
    return RemoteConfig(
        base_url=base_url,
        model=model,
        api_key_env=values.get("api_key_env", DEFAULT_API_KEY_ENV),
        context_length=flag_ctx or values.get("context_length"),
        fallback_context=settings.ctx,
        timeout=float(values.get("timeout", DEFAULT_READ_TIMEOUT)),
        profile=engine,
    )


def _checked_profile(name: str, profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's values, type-checked; errors name the profile and the key."""
    values = dict(profile)

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"[engines.{name}] {key} {why}")

    for key in ("base_url", "model", "api_key_env"):
        if key in values and (not isinstance(values[key], str) or not values[key]):
            raise bad(key, "must be a non-empty string")
    if "api_key_env" in values and not _ENV_NAME.fullmatch(values["api_key_env"]):
        raise bad("api_key_env", "must be the NAME of an environment variable (the key itself never goes in the file)")
    if "context_length" in values:
        v = values["context_length"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 256:
            raise bad("context_length", "must be a whole number of tokens (>= 256)")
    if "timeout" in values:
        v = values["timeout"]
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise bad("timeout", "must be a number of seconds > 0")
    return values
