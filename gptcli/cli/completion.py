"""Shell-completion callbacks: template names, model names, session ids, languages, config keys."""

import os
from collections.abc import Callable
from typing import Any

import typer

# A completer answers while the user waits on TAB: light imports only (no llama_cpp, no
# huggingface_hub), nothing created on disk, and any failure means "no suggestions", never a traceback.

Suggestions = list[tuple[str, str]]  # (value, help): bash shows values, zsh and fish show the help too

SESSION_LIMIT = 50
FALLBACK_LANGUAGES: tuple[tuple[str, str], ...] = (
    ("ar", "Arabic"), ("de", "German"), ("en", "English"), ("es", "Spanish"), ("fr", "French"),
    ("hi", "Hindi"), ("it", "Italian"), ("ja", "Japanese"), ("ko", "Korean"), ("nl", "Dutch"),
    ("pl", "Polish"), ("pt", "Portuguese"), ("ru", "Russian"), ("tr", "Turkish"), ("uk", "Ukrainian"),
    ("zh", "Chinese"),
)


def _matching(pairs: list[tuple[str, str]], incomplete: str) -> Suggestions:
    """The pairs whose value starts with ``incomplete``, in order, without duplicates."""
    seen: set[str] = set()
    out: Suggestions = []
    for value, help_text in pairs:
        if value.startswith(incomplete) and value not in seen:
            seen.add(value)
            help_line = " ".join((help_text or "").split())  # one line: zsh and fish show it beside the value
            out.append((value, help_line if len(help_line) <= 70 else help_line[:69] + "…"))
    return out


def _safely(source: Callable[[], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    try:
        return source()
    except Exception:  # a broken file must not break the user's shell
        return []


def template_pairs() -> list[tuple[str, str]]:
    """Every template name (shipped and the user's) with its description."""
    from gptcli.templates import TemplateLibrary

    library = TemplateLibrary.load()
    return [(name, library.entries[name].description) for name in library.names()]


def model_pairs() -> list[tuple[str, str]]:
    """The embedded model and every alias in the model registry."""
    from gptcli import models

    return [(name, "model") for name in models.model_names()]


def session_pairs() -> list[tuple[str, str]]:
    """The newest saved conversations' ids with their titles; nothing when there is no history yet."""
    from gptcli import store

    if not store.default_store_path().is_file():  # completing must not create the database
        return []
    with store.ConversationStore.open() as history:
        return [(s.id, s.title) for s in history.list_sessions(SESSION_LIMIT)]


def language_pairs() -> list[tuple[str, str]]:
    """Language codes (``fr``, ``pt-BR``) and one-word English names (``French``)."""
    try:
        from gptcli.languages import known_languages

        languages = [(lang.code, lang.name) for lang in known_languages() if lang.code != "auto"]
    except ImportError:
        languages = list(FALLBACK_LANGUAGES)
    names = [(name, code) for code, name in languages if " " not in name]
    return languages + names


def config_key_pairs() -> list[tuple[str, str]]:
    """Every setting of the config file with its line of help."""
    from gptcli.config import KEYS

    return [(key.name, key.help) for key in KEYS.values()]


def complete_template(incomplete: str) -> Suggestions:
    """``-t/--template``: template names."""
    return _matching(_safely(template_pairs), incomplete)


def complete_model(incomplete: str) -> Suggestions:
    """``--model``: aliases; a path (``./``, ``/``, ``~``) is left to the shell's file completion."""
    if incomplete.startswith((".", "/", "~")) or os.sep in incomplete and ":" not in incomplete:
        return []
    return _matching(_safely(model_pairs), incomplete)


def complete_session(incomplete: str) -> Suggestions:
    """``--session`` and history ids: the newest session ids."""
    return _matching(_safely(session_pairs), incomplete.lower())


def complete_language(incomplete: str) -> Suggestions:
    """``translate --to/--from``: codes and names."""
    return _matching(_safely(language_pairs), incomplete)


def engine_pairs() -> list[tuple[str, str]]:
    """``local``, ``remote`` and the ``[engines.NAME]`` profiles of the config file."""
    from gptcli.config import hide_credentials, load_settings

    profiles = load_settings().profiles
    return [("local", "llama.cpp in this process"), ("remote", "an OpenAI-compatible server")] + [
        (name, hide_credentials(str(profile.get("base_url", "profile")))) for name, profile in profiles.items()
    ]


def complete_engine(incomplete: str) -> Suggestions:
    """``--engine``: local, remote and the config file's profiles."""
    return _matching(_safely(engine_pairs), incomplete)


def complete_config_key(incomplete: str) -> Suggestions:
    """``config set/unset/show KEY``: setting names."""
    return _matching(_safely(config_key_pairs), incomplete)


def complete_config_value(ctx: typer.Context, incomplete: str) -> Suggestions:
    """``config set KEY VALUE``: the allowed values of choice and yes/no settings, model names for ``model``."""
    key: Any = ctx.params.get("setting")
    choices = {
        "color": ["auto", "always", "never"],
        "overflow": ["summarize", "drop", "stop"],
        "engine": ["local", "remote"],
        "gpu_layers": ["all", "0"],
        "history": ["true", "false"],
        "flash_attn": ["true", "false"],
        "loop_guard": ["true", "false"],
    }
    if key == "model":
        return complete_model(incomplete)
    if key == "engine":
        profiles: list[tuple[str, str]] = []
        try:
            from gptcli.config import load_settings

            profiles = [(name, "engine profile") for name in load_settings().profiles]
        except Exception:
            pass
        return _matching([(c, "engine") for c in choices["engine"]] + profiles, incomplete)
    return _matching([(c, str(key)) for c in choices.get(str(key), [])], incomplete)


SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def named_shell_completion(args: list[str], out: Any) -> int | None:
    """``--install-completion SHELL`` / ``--show-completion SHELL``: for the shell named, not the one detected.

    Typer's options are flags that act as soon as they are parsed, so the name after them was
    never read (``--install-completion zsh`` installed bash completion from a bash prompt). Returns
    the exit code when the arguments were one of these, else None.
    """
    if len(args) != 2 or args[0] not in ("--install-completion", "--show-completion") or args[1].startswith("-"):
        return None
    from gptcli.errors import UsageError

    shell = args[1]
    if shell not in SHELLS:
        raise UsageError(f"unknown shell '{shell}' for {args[0]} (one of: {', '.join(SHELLS)})")
    from gptcli import compat

    if args[0] == "--show-completion":
        out.write(compat.completion_script(shell) + "\n")
        return 0
    path = compat.install_completion(shell)
    out.write(f"{shell} completion installed in {path}\nCompletion will take effect once you restart the terminal\n")
    return 0
