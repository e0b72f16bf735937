"""Slash commands as text: their specs and aliases, parsing a line into a ``Command``, the /help text."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from difflib import get_close_matches
from typing import Any

from gptcli.config import KEYS
from gptcli.conversation import POLICIES
from gptcli.errors import UsageError


@dataclass(frozen=True)
class CommandSpec:
    name: str
    arg: str  # "" (no argument), "[ARG]" (optional) or "ARG" (required)
    help: str


COMMANDS: dict[str, CommandSpec] = {
    c.name: c
    for c in [
        CommandSpec("help", "", "List these commands and the keys."),
        CommandSpec("new", "", "Start a new conversation (same system prompt and settings)."),
        CommandSpec("retry", "", "Regenerate the last reply."),
        CommandSpec("continue", "", "Carry on the last reply where it stopped (at the length limit, or interrupted)."),
        CommandSpec("undo", "", "Remove the last exchange."),
        CommandSpec("system", "[TEXT]", "Set the system prompt (no TEXT: show it; 'off' removes it)."),
        CommandSpec("template", "[NAME KEY=VALUE...]", "Use a template's system prompt (with its variables); no NAME lists them."),
        CommandSpec("model", "[NAME_OR_PATH]", "Switch to another model (no argument: show the current one)."),
        CommandSpec("set", "[KEY VALUE]", "Change a setting: temperature, top_p, top_k, min_p, repeat_penalty, max_tokens, seed, overflow."),
        CommandSpec("schema", "[SCHEMA]", "Reply with JSON that follows SCHEMA (file, inline JSON, 'name, age int'); 'off' stops."),
        CommandSpec("tokens", "", "Show how the context window is used and the room left for the reply."),
        CommandSpec("stats", "[on|off]", "Turn the status line after each reply on or off (no argument: switch)."),
        CommandSpec("save", "NAME", "Name this conversation, to resume it with `gptcli chat -s NAME`."),
        CommandSpec("sessions", "", "List saved conversations."),
        CommandSpec("load", "ID_OR_NAME", "Switch to a saved conversation."),
        CommandSpec("export", "FILE", "Write this conversation to FILE (Markdown, or JSON for .json)."),
        CommandSpec("edit", "[TEXT]", "Write a message in $VISUAL/$EDITOR (starting from TEXT), then send it."),
        CommandSpec("file", "PATH", "Attach a text file to the next message (also: @PATH in a message)."),
        CommandSpec("copy", "[N]", "Copy the last reply (N: its Nth code block) to the clipboard."),
        CommandSpec("clear", "", "Clear the screen (the conversation goes on)."),
        CommandSpec("exit", "", "Leave (also Ctrl-D)."),
    ]
}
ALIASES = {"quit": "exit", "q": "exit", "h": "help", "?": "help", "reset": "new"}
SETTABLE = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "overflow")

_COMMAND_WORD = re.compile(r"/([A-Za-z?][A-Za-z0-9_-]*)(?=\s|$)")


class UnknownCommand(UsageError):
    """A slash command that does not exist: shown as a one-line hint, the chat goes on."""


@dataclass(frozen=True)
class Command:
    """A parsed slash command; ``/set`` carries its checked ``key`` and ``value``."""

    name: str
    arg: str = ""
    key: str | None = None
    value: Any = None


def parse_command(line: str) -> Command | None:
    """``/name arg`` -> ``Command``; ``None`` when ``line`` is a message for the model.

    A line is a command when it starts with ``/word``: ``/usr/bin/env is what?`` and ``//text``
    (sent as ``/text``) are messages. Only ``GptcliError``s are raised, for unknown commands and
    bad arguments.
    """
    text = line.strip()
    match = _COMMAND_WORD.match(text)
    if match is None:
        return None
    word = match.group(1).lower()
    name = ALIASES.get(word, word)
    arg = text[match.end() :].strip()
    spec = COMMANDS.get(name)
    if spec is None:
        close = get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        hint = f"did you mean /{close[0]}? " if close else ""
        raise UnknownCommand(f"unknown command /{word}: {hint}/help lists the commands")
    if spec.arg == "" and arg:
        raise UsageError(f"/{name} takes no argument")
    if spec.arg and not spec.arg.startswith("[") and not arg:
        raise UsageError(f"/{name} needs {spec.arg}: /{name} {spec.arg}")
    if name == "set" and arg:
        key, value = parse_setting(arg)
        return Command(name, arg, key, value)
    return Command(name, arg)


def parse_setting(arg: str) -> tuple[str, Any]:
    """``temperature 0.7`` (or ``temperature=0.7``) -> ``("temperature", 0.7)``, checked like the config file."""
    key_text, _, value_text = arg.replace("=", " ", 1).strip().partition(" ")
    key = key_text.strip().lower().replace("-", "_")
    value_text = value_text.strip()
    if key in ("temp",):
        key = "temperature"
    if key not in SETTABLE:
        raise UsageError(f"/set cannot change '{key_text}': choose one of {', '.join(SETTABLE)}")
    if not value_text:
        raise UsageError(f"/set {key} needs a value, for example /set {key} {_example_value(key)}")
    spec = KEYS[key]
    value: Any
    if key == "seed" and value_text.lower() in ("random", "none", "off"):
        return key, None
    try:
        if spec.kind is float:
            value = float(value_text)
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
        elif spec.kind is int:
            value = int(value_text)
        else:
            value = value_text.lower()
        value = spec.check(value)
    except (ValueError, OverflowError, TypeError) as exc:
        why = str(exc) if str(exc).startswith("must") else f"must be {'a number' if spec.kind is float else 'a whole number' if spec.kind is int else 'one of ' + ', '.join(POLICIES)}"
        raise UsageError(f"/set {key} {why}") from None
    return key, value


def _example_value(key: str) -> str:
    return {"temperature": "0.7", "top_p": "0.9", "top_k": "40", "min_p": "0.05", "repeat_penalty": "1.1",
            "max_tokens": "512", "seed": "42", "overflow": "drop"}[key]


KEYS_HELP = [
    "Enter sends · Alt-Enter (or Esc Enter) adds a line",
    "Up/Down recall input history (what is typed filters it) · Ctrl-R searches it, Enter sends the match",
    "Ctrl-X Ctrl-E edits the message in $VISUAL/$EDITOR · @PATH attaches a file (Tab completes it)",
    "Tab completes commands, templates and models · Ctrl-C stops a reply or clears the line · Ctrl-D leaves",
    "// at the start sends a message that begins with / (the first / is dropped)",
]


def help_text(width: int = 100) -> str:
    """What ``/help`` prints at ``width`` columns: the commands, then the keys, wrapped at words.

    Wide enough, a command and its help share a line; narrower, the help goes under the command.
    """
    import textwrap

    width = max(20, width)
    names = [f"/{c.name} {c.arg}".strip() for c in COMMANDS.values()]
    column = max(len(n) for n in names)
    lines: list[str] = []
    for name, spec in zip(names, COMMANDS.values()):
        if width >= column + 4 + 30:
            indent = " " * (column + 4)
            lines += textwrap.wrap(spec.help, width, initial_indent=f"  {name:<{column}}  ", subsequent_indent=indent, break_on_hyphens=False)
        else:
            lines.append(f"  {name}")
            lines += textwrap.wrap(spec.help, width, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
    lines.append("")
    for item in KEYS_HELP:
        lines += textwrap.wrap(item, width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    return "\n".join(lines)
