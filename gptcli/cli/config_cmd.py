"""``gptcli config``: show the effective settings and where they came from; path, edit, set, unset."""

import json
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from gptcli.cli.app import AppState, command_group, state
from gptcli.cli.completion import complete_config_key, complete_config_value
from gptcli.config import KEYS, Settings, config_path, hide_credentials, known_key, load_settings
from gptcli.errors import ConfigError
from gptcli.render import Column, write_json, write_table, write_text

config_app = command_group(
    "config",
    "Settings: show them and where each came from, edit the config file, set or unset one key.\n\n"
    "Example: gptcli config set temperature 0.3",
)

KeyArgument = Annotated[str, typer.Argument(help="The setting, e.g. temperature.", metavar="KEY", autocompletion=complete_config_key)]


def _shown(name: str, value: Any) -> Any:
    """A value as the user writes it (``gpu_layers`` -1 is ``all``); a URL's ``user:password@`` hidden."""
    if name == "base_url" and isinstance(value, str):
        return hide_credentials(value)
    return "all" if name == "gpu_layers" and value == -1 else value


def _profile_shown(profile: Any) -> dict[str, Any]:
    return {k: _shown(k, v) for k, v in dict(profile).items()}


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _source_label(settings: Settings, name: str) -> str:
    source = settings.sources.get(name, "default")
    return f"env {'GPTCLI_' + name.upper()}" if source == "env" else source


def _records(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        name: {
            "value": _shown(name, settings.values.get(name)),
            "source": settings.sources.get(name, "default"),
            "default": _shown(name, key.default),
            "help": key.help,
        }
        for name, key in KEYS.items()
    }


@config_app.command("show")
def show(
    ctx: typer.Context,
    setting: Annotated[
        Optional[str],
        typer.Argument(help="Print only this setting's value.", metavar="[KEY]", autocompletion=complete_config_key),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON object: path, settings (value, source, default, help), profiles.")] = False,
) -> None:
    """Show every effective setting and where it came from: default, file, env or flag.

    Example: GPTCLI_TEMPERATURE=0.2 gptcli config show
    """
    st = state(ctx)
    broken: ConfigError | None = None
    try:
        settings = st.settings
    except ConfigError as exc:  # show what the other sources say, then the error (exit 1)
        if as_json:
            raise  # a script gets the error event, as for every command
        broken = exc
        try:
            settings = load_settings(read_file=False)
        except ConfigError:  # the environment is wrong too: nothing to show
            raise exc from None
    path = settings.path or config_path()
    try:
        _show(st, settings, path, setting, as_json, broken)
    finally:
        if broken is not None:
            st.env.error(f"{broken} (the file was left out above; fix it with `gptcli config edit`)")
    if broken is not None:
        raise typer.Exit(1)


def _show(st: AppState, settings: Settings, path: Path, setting: Optional[str], as_json: bool, broken: ConfigError | None) -> None:
    if setting is not None:
        name = known_key(setting).name
        value = _shown(name, settings.values.get(name))
        if as_json:
            write_text(st.env, json.dumps({"key": name, "value": value, "source": settings.sources.get(name, "default")}) + "\n")
        else:
            write_text(st.env, ("" if value is None else _text(value)) + "\n")
        return
    if as_json:
        data = {
            "path": str(path),
            "exists": path.is_file(),
            "settings": _records(settings),
            "profiles": {name: _profile_shown(profile) for name, profile in settings.profiles.items()},
        }
        write_json(st.env.stdout, data)
        return
    _print_table(st, settings, path, broken is not None)


def _print_table(st: AppState, settings: Settings, path: Path, broken: bool = False) -> None:
    rows = [(name, _text(_shown(name, settings.values.get(name))), _source_label(settings, name)) for name in KEYS]
    state_note = " (not read: it has an error, below)" if broken else "" if path.is_file() else " (not created yet)"
    where = f"config file: {path}{state_note}"
    columns = [Column("SETTING"), Column("VALUE"), Column("FROM")]
    changed = {index for index, (_, _, source) in enumerate(rows) if source != "default"}
    write_table(st.env, columns, rows, bold=changed, above=where)
    for name, profile in settings.profiles.items():
        fields = ", ".join(f"{k}={v}" for k, v in _profile_shown(profile).items())
        write_text(st.env, f"[engines.{name}] {fields}\n")



@config_app.command("path")
def path_command(ctx: typer.Context) -> None:
    """Print the config file's path (it may not exist yet).

    Example: cat "$(gptcli config path)"
    """
    st = state(ctx)
    path = config_path()
    write_text(st.env, f"{path}\n")
    if not path.is_file():
        st.env.notice("(not created yet: `gptcli config set` or `gptcli config edit` creates it)")


@config_app.command("set", context_settings={"ignore_unknown_options": True})  # `set temperature -1` is a value
def set_command(
    ctx: typer.Context,
    setting: KeyArgument,
    value: Annotated[str, typer.Argument(help="The new value; checked before it is written.", metavar="VALUE", autocompletion=complete_config_value)],
) -> None:
    """Set one key in the config file, after checking the value; comments and other keys are kept.

    Example: gptcli config set overflow drop
    """
    from gptcli.config import set_config_value

    st = state(ctx)
    name = known_key(setting).name
    written = set_config_value(name, value)
    st.env.notice(f"{name} = {_text(written)} (in {config_path()})")
    env_name = f"GPTCLI_{name.upper()}"
    if os.environ.get(env_name):
        st.env.notice(f"note: {env_name} is set in the environment and overrides the file")


@config_app.command("unset")
def unset_command(ctx: typer.Context, setting: KeyArgument) -> None:
    """Remove one key from the config file, so its default (or environment variable) applies again.

    Example: gptcli config unset temperature
    """
    from gptcli.config import unset_config_value

    st = state(ctx)
    name = known_key(setting).name
    if unset_config_value(name):
        st.env.notice(f"{name} removed from {config_path()}: default {_text(_shown(name, KEYS[name].default))}")
    else:
        st.env.notice(f"{name} is not set in {config_path()}: nothing to do")


@config_app.command("edit")
def edit_command(ctx: typer.Context) -> None:
    """Open the config file in $EDITOR (created with every key commented out), then check it.

    Example: EDITOR=nano gptcli config edit
    """
    from gptcli.config import config_scaffold, read_config_file, write_config_text
    from gptcli.editor import edit_file, editor_command

    st = state(ctx)
    path = config_path()
    if not path.exists():
        write_config_text(path, config_scaffold())
    command = editor_command(st.env.stdin_isatty and st.env.stdout_isatty)
    if command is None:
        raise ConfigError(f"no editor: set $EDITOR (or $VISUAL); the config file is {path}")
    edit_file(command, path)
    try:
        values, profiles = read_config_file(path)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (your edit is saved: run `gptcli config edit` again to fix it)") from None
    count = len(values) + len(profiles)
    st.env.notice(f"{path} is valid: {count} setting{'s' if count != 1 else ''}")
