"""Settings: defaults < config file (TOML) < environment < flags, resolved once into a frozen object."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gptcli.errors import ConfigError, UsageError
from gptcli.textio import user_path

APP_NAME = "gptcli"


# ---------------------------------------------------------------- paths

def config_dir() -> Path:
    """The user's config folder (templates live in its ``templates/``)."""
    if env := os.environ.get("GPTCLI_CONFIG_DIR"):
        return user_path(env)
    if env := os.environ.get("GPTCLI_CONFIG"):
        return user_path(env).parent
    if env := os.environ.get("GPTCLI_HOME"):
        return user_path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME))


def config_path() -> Path:
    """The config file: ``GPTCLI_CONFIG``, else ``config.toml`` in the config folder."""
    if env := os.environ.get("GPTCLI_CONFIG"):
        return user_path(env)
    return config_dir() / "config.toml"


def data_dir() -> Path:
    """The user's data folder (history, input history, KV states): ``GPTCLI_HOME`` overrides."""
    if env := os.environ.get("GPTCLI_HOME"):
        return user_path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


def cache_dir() -> Path:
    """The user's cache folder (knowledge-base indexes): ``GPTCLI_CACHE_DIR``, else ``cache`` under ``GPTCLI_HOME``."""
    if env := os.environ.get("GPTCLI_CACHE_DIR"):
        return user_path(env)
    if env := os.environ.get("GPTCLI_HOME"):
        return user_path(env) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing and return it."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.stat().st_mode & 0o077:
            path.chmod(0o700)
    except OSError:
        pass
    return path


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def hide_credentials(text: str) -> str:
    """``http://user:pass@host/v1`` -> ``http://***@host/v1``, wherever a URL sits in ``text``.

    A setting holding a URL without its scheme (``user:pass@host:8080``) is masked too.
    """
    if "://" not in text and re.match(r"^[^/\s@]+@[^\s@]+$", text):
        return "***@" + text.split("@", 1)[1]
    return _URL_CREDENTIALS.sub(r"\1***@", text)


# ---------------------------------------------------------------- keys

def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError("must be a positive integer")
    return v


def _non_negative_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("must be an integer >= 0")
    return v


def _ctx(v: Any) -> int:
    v = _positive_int(v)
    if v < 256 or v % 256:
        raise ValueError("must be a multiple of 256 (256, 512, 1024, ...)")
    return int(v)


def _float_range(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("must be a number")
        v = float(v)
        if not lo <= v <= hi or (lo_open and v == lo):  # NaN fails too
            raise ValueError(f"must be {'>' if lo_open else '>='} {lo:g} and <= {hi:g}")
        return float(v)

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"must be one of: {', '.join(options)}")
        return str(v)

    return check


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _gpu_layers(v: Any) -> int:
    if v == "all":
        return -1
    if isinstance(v, bool) or not isinstance(v, int) or v < -1:
        raise ValueError("must be a number of layers or 'all'")
    return v


def _seed(v: Any) -> int:
    # 4294967295 (LLAMA_DEFAULT_SEED) would make llama.cpp pick a random seed: not reproducible
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32 - 1:
        raise ValueError("must be an integer between 0 and 4294967294")
    return v


@dataclass(frozen=True)
class Key:
    """One setting: its type check, default and the line of help the README and `config show` use."""

    name: str
    check: Callable[[Any], Any]
    default: Any
    help: str
    kind: type = str  # how an environment variable or `config set` string is parsed


KEYS: dict[str, Key] = {
    k.name: k
    for k in [
        Key("model", _string, None, "Model: alias, REPO[:FILE] pulled from the Hub, or a GGUF path."),
        Key("engine", _string, "local", "Engine: 'local', 'remote', or the name of an [engines.NAME] profile."),
        Key("base_url", _string, None, "Base URL of an OpenAI-compatible server (remote engine).", str),
        Key("ctx", _ctx, None, "Context window in tokens (multiple of 256); default min(model's, 4096).", int),
        Key("threads", _positive_int, None, "CPU threads; default the number of physical cores.", int),
        Key("gpu_layers", _gpu_layers, 0, "Layers offloaded to the GPU (CUDA/Metal builds): a number or 'all'.", int),
        Key("temperature", _float_range(0, 5), 0.7, "Sampling temperature (0 = greedy).", float),
        Key("top_p", _float_range(0, 1, lo_open=True), 0.95, "Nucleus sampling: keep tokens up to this probability mass.", float),
        Key("top_k", _non_negative_int, 40, "Keep only the K most likely tokens (0 = all).", int),
        Key("min_p", _float_range(0, 1), 0.05, "Drop tokens less likely than min_p x the best one.", float),
        Key("repeat_penalty", _float_range(0, 10, lo_open=True), 1.1, "Penalty for repeated tokens (1 = none).", float),
        Key("max_tokens", _positive_int, 1024, "Most tokens in one reply.", int),
        Key("seed", _seed, None, "Random seed: the same seed and input give the same reply.", int),
        Key("speculative", _boolean, None, "Speculative decoding (drafts from the prompt, or a draft model, checked in one batch); default: on for editing templates and translate with layers on a GPU.", bool),
        Key("draft_model", _string, None, "A small model with the same vocabulary that drafts tokens for the model to check (local engine)."),
        Key("history", _boolean, True, "Save conversations in the history database.", bool),
        Key("loop_guard", _boolean, True, "Stop a reply that starts repeating itself (a loop) and keep what came before it.", bool),
        Key("overflow", _choice("summarize", "drop", "stop"), "summarize", "When a chat outgrows the context: summarize, drop or stop.", str),
        Key("color", _choice("auto", "always", "never"), "auto", "Colour output: auto, always or never.", str),
        Key("flash_attn", _boolean, None, "Flash attention in llama.cpp (default on, as llama.cpp's own; measured faster on an AMD EPYC, slower deep in a chat on an Intel Xeon: README).", bool),
        Key("batch_size", _positive_int, 512, "Prompt-processing batch size (tokens).", int),
        Key("embed_model", _string, None, "Vectors for `support --kb`: 'static' (default, built in, multilingual), 'none' (BM25 and 4-grams only), or an embedding GGUF.", str),
        Key("kv_cache_mb", _non_negative_int, 512, "Disk kept for saved model states that make resuming a chat instant (MB; 0 = off).", int),
        Key("vi_mode", _boolean, False, "Vi key bindings at the chat prompt (Esc for normal mode).", bool),
        Key("max_input_mb", _positive_int, 64, "Largest input file or standard input read (MB); a larger one is an error.", int),
    ]
}

PROFILE_KEYS = {"base_url", "model", "api_key_env", "context_length", "timeout"}


def use_flash_attention(flash_attn: bool | None) -> bool:
    """The ``flash_attn`` setting, or when unset: on.

    With llama.cpp 0.3.36's CPU kernels it is as fast as without on short contexts and faster on
    long prompts and deep replies (benchmarks/README.md "Engine defaults"), and a speculative
    draft's batch gives the logits single steps give while the context holds at most 256 cells
    (without it they are apart by up to 0.9 logits on SmolLM2 at any length).
    """
    return True if flash_attn is None else flash_attn


def parse_value(key: Key, text: str) -> Any:
    """Parse a string from the environment or `config set` into the key's type, then validate."""
    text = text.strip()
    try:
        if key.name == "gpu_layers" and text == "all":
            value: Any = "all"
        elif key.kind is bool:
            low = text.lower()
            if low in {"1", "true", "yes", "on"}:
                value = True
            elif low in {"0", "false", "no", "off"}:
                value = False
            else:
                raise ValueError("must be true or false")
        elif key.kind is int:
            try:
                value = int(text)
            except ValueError:
                raise ValueError("must be a whole number" + (" or 'all'" if key.name == "gpu_layers" else "")) from None
        elif key.kind is float:
            try:
                value = float(text)
            except ValueError:
                raise ValueError("must be a number") from None
        else:
            value = text
        return key.check(value)
    except ValueError as exc:
        raise ValueError(f"{key.name} {exc}" if not str(exc).startswith(key.name) else str(exc)) from None


@dataclass(frozen=True)
class Settings:
    """Effective settings, with where each value came from (default, file, env, flag)."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    path: Path | None = None
    # the most tokens this process will need, prompt and reply (a one-shot command knows it before
    # the model loads): a local model's context is made no larger unless ctx is set
    fit: int | None = None

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def engine_options(self) -> dict[str, Any]:
        """The local engine's llama.cpp options (``gptcli serve`` gives its server the same)."""
        return {name: self.values[name] for name in ("ctx", "threads", "gpu_layers", "flash_attn", "batch_size")}

    def with_flags(self, **flags: Any) -> Settings:
        """A copy with command-line flags applied (``None`` means the flag was not given)."""
        values, sources = dict(self.values), dict(self.sources)
        for name, value in flags.items():
            if value is None:
                continue
            try:
                values[name] = KEYS[name].check(value)
            except ValueError as exc:  # a flag out of range is a usage error (exit 2), as click's own are
                raise UsageError(f"--{name.replace('_', '-')} {exc}") from None
            sources[name] = "flag"
        return dataclasses.replace(self, values=values, sources=sources)


def _line_of(text: str, key: str) -> int | None:
    for i, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return i
    return None


def read_config_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Read and validate the TOML file: (settings, engine profiles). Errors name the file and line."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # no file (its folder may not even be creatable)
        return {}, {}
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None

    values: dict[str, Any] = {}
    profiles: dict[str, dict[str, Any]] = {}
    for name, value in data.items():
        where = f"config file {path}, line {_line_of(text, name) or '?'}"
        if name == "engines":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: 'engines' must be a table of [engines.NAME] profiles")
            for pname, profile in value.items():
                if not isinstance(profile, dict):
                    raise ConfigError(f"{where}: [engines.{pname}] must be a table")
                unknown = set(profile) - PROFILE_KEYS
                if unknown:
                    raise ConfigError(
                        f"config file {path}: unknown key '{sorted(unknown)[0]}' in [engines.{pname}]"
                        f" (known: {', '.join(sorted(PROFILE_KEYS))})"
                    )
                profiles[pname] = dict(profile)
            continue
        key = KEYS.get(name)
        if key is None:
            raise ConfigError(f"{where}: unknown key '{name}' (see `gptcli config show`)")
        try:
            values[name] = key.check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {name} {exc}") from None
    return values, profiles


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None, *, read_file: bool = True) -> Settings:
    """Resolve the settings: defaults < config file < ``GPTCLI_<KEY>`` environment variables.

    ``read_file=False`` leaves the file out (``config show`` still shows the rest when it is broken).
    """
    path = path or config_path()
    environ = os.environ if environ is None else environ
    values = {name: key.default for name, key in KEYS.items()}
    sources = {name: "default" for name in KEYS}
    file_values, profiles = read_config_file(path) if read_file else ({}, {})
    for name, value in file_values.items():
        values[name], sources[name] = value, "file"
    for name, key in KEYS.items():
        env_name = f"GPTCLI_{name.upper()}"
        if env_name in environ and environ[env_name] != "":
            try:
                values[name] = parse_value(key, environ[env_name])
            except ValueError as exc:
                raise ConfigError(f"environment variable {env_name}: {exc}") from None
            sources[name] = "env"
    return Settings(values=values, sources=sources, profiles=profiles, path=path)


# ---------------------------------------------------------------- writing (`gptcli config set/unset/edit`)

CONFIG_HEADER = """\
# gptcli settings. Every key is optional; `gptcli config show` lists them all with their sources.
# Precedence: defaults < this file < GPTCLI_<KEY> environment variables < command-line flags.
# Check this file with `gptcli config show`; change one key with `gptcli config set KEY VALUE`.
"""


def config_scaffold() -> str:
    """A new config file: the header, then every key commented out with its default and help."""
    import json

    lines = [CONFIG_HEADER]
    for key in KEYS.values():
        shown = "" if key.default is None else json.dumps(key.default)
        lines.append(f"# {key.help}")
        lines.append(f"# {key.name} = {shown}\n")
    lines.append("# Remote engine profiles, chosen with --engine NAME:")
    lines.append("# [engines.work]")
    lines.append('# base_url = "http://127.0.0.1:8080/v1"')
    lines.append('# api_key_env = "WORK_API_KEY"\n')
    return "\n".join(lines)


def known_key(name: str) -> Key:
    """The setting called ``name``; an unknown name is a ``ConfigError`` listing the known ones."""
    key = KEYS.get(name) or KEYS.get(name.replace("-", "_"))
    if key is not None:
        return key
    import difflib

    if name == "engines" or name.startswith("engines."):
        raise ConfigError("engine profiles are tables: edit them with `gptcli config edit`")
    close = difflib.get_close_matches(name, list(KEYS), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"unknown setting '{name}' ({hint}settings: {', '.join(KEYS)})")


def _config_document(path: Path) -> Any:
    """The config file as a tomlkit document (comments kept); an empty one when it does not exist."""
    import tomlkit

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return tomlkit.parse(CONFIG_HEADER)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: fix it with `gptcli config edit`") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    try:
        return tomlkit.parse(text)
    except Exception as exc:  # tomlkit's ParseError names the line and column
        raise ConfigError(f"config file {path}: {exc} (fix it with `gptcli config edit`)") from None


def write_config_text(path: Path, text: str) -> None:
    """Replace the config file atomically (a symlinked file is written through its link)."""
    from gptcli.textio import replace_file

    target = path.resolve() if path.is_symlink() else path
    ensure_private_dir(target.parent)
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o600
    try:
        replace_file(target, text.encode("utf-8"), mode=mode)
    except OSError as exc:
        raise ConfigError(f"cannot write config file {target}: {exc.strerror or exc}") from None


def set_config_value(name: str, text: str, path: Path | None = None) -> Any:
    """Validate ``text`` for setting ``name`` and write it into the config file; returns the value.

    Other keys, comments and engine profiles are kept as they are.
    """
    key = known_key(name)
    try:
        value = parse_value(key, text)
    except ValueError as exc:
        raise ConfigError(f"invalid value '{text}': {exc}") from None
    if key.name == "gpu_layers" and text.strip() == "all":
        value = "all"  # written as the user typed it
    path = path or config_path()
    if not path.exists():  # a first file is the one `config edit` makes, with this key set in its place
        import tomlkit

        line = tomlkit.dumps({key.name: value}).strip()
        scaffold = re.sub(rf"^# {re.escape(key.name)} = .*$", lambda _: line, config_scaffold(), count=1, flags=re.M)
        write_config_text(path, scaffold)
        return value
    document = _config_document(path)
    document[key.name] = value
    write_config_text(path, document.as_string())
    return value


def unset_config_value(name: str, path: Path | None = None) -> bool:
    """Remove setting ``name`` from the config file; ``False`` when the file did not set it."""
    key = known_key(name)
    path = path or config_path()
    if not path.exists():
        return False
    document = _config_document(path)
    if key.name not in document:
        return False
    del document[key.name]
    write_config_text(path, document.as_string())
    return True
