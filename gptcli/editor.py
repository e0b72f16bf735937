"""Opening a file in the user's editor: $VISUAL, else $EDITOR, else vi when on a terminal."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from gptcli.errors import GptcliError, UsageError


def editor_command(on_terminal: bool) -> list[str] | None:
    """The editor's command words, or ``None`` when none is set and vi cannot be used (no terminal)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        return ["vi"] if on_terminal and shutil.which("vi") else None
    try:
        return shlex.split(editor)
    except ValueError:
        raise UsageError(f"cannot parse $EDITOR '{editor}'") from None


def edit_file(command: list[str], path: Path) -> None:
    """Run the editor on ``path`` and wait; a failure to start or a non-zero exit is an error (the file is kept)."""
    try:
        code = subprocess.call([*command, str(path)])
    except OSError as exc:
        raise GptcliError(f"cannot start the editor '{command[0]}': {exc.strerror or exc}") from None
    if code != 0:
        raise GptcliError(f"the editor '{command[0]}' exited with status {code}; {path} is kept as it is")
