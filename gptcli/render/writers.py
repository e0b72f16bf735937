"""Writing data as it is: text, an indented JSON document, or one ``--json`` event a line."""

from __future__ import annotations

import json
from typing import IO, Any

from gptcli.render.env import Env, write_out


def write_text(env: Env, text: str) -> None:
    """``text`` on stdout as it is (data, a table already laid out, an export), flushed."""
    env.stdout.write(text)
    env.stdout.flush()


def write_json(stream: IO[str], value: Any) -> None:
    """The ``--json`` of a listing or a show: one indented JSON document, non-ASCII text as it is."""
    stream.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")
    stream.flush()


def write_event(stream: IO[str], event: dict[str, Any]) -> None:
    """The one writer of ``--json`` events: one JSON object a line, flushed at once.

    A closed pipe raises ``OutputClosed``; another write failure (a full disk) ``OutputFailed``.
    """
    write_out(stream, json.dumps(event, ensure_ascii=False) + "\n")
