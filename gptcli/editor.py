"""Opening a file in the user's editor: $VISUAL, else $EDITOR, else vi when on a terminal."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from gptcli.errors import GptcliError, InputError, UsageError


def editor_command(on_terminal: bool) -> list[str] | None:
    """The editor's command words, or ``None`` when none is set and vi cannot be used (no terminal)."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        return ["vi"] if on_terminal and shutil.which("vi") else None
    try:
        return shlex.split(editor)
    except ValueError:
        raise UsageError(f"cannot parse $EDITOR '{editor}'") from None


def run_editor(command: list[str], path: Path) -> int:
    """Run the editor on ``path`` and wait for it; its exit status. An editor that cannot start is an error."""
    try:
        return subprocess.call([*command, str(path)])
    except OSError as exc:
        raise GptcliError(f"cannot start the editor '{command[0]}': {exc.strerror or exc}") from None


def edit_file(command: list[str], path: Path) -> None:
    """Run the editor on ``path`` and wait; a failure to start or a non-zero exit is an error (the file is kept)."""
    code = run_editor(command, path)
    if code != 0:
        raise GptcliError(f"the editor '{command[0]}' exited with status {code}; {path} is kept as it is")


def edit_text(text: str, *, on_terminal: bool, suffix: str = ".md") -> str:
    """``text`` edited in the editor through a private temporary file; what was saved there comes back.

    No editor is a ``UsageError``. An editor that fails, or saves text that is not UTF-8, is an
    error; what it saved is kept in the file the error names, so nothing written is lost.
    """
    command = editor_command(on_terminal)
    if command is None:
        raise UsageError("no editor: set $EDITOR (or $VISUAL)")
    fd, name = tempfile.mkstemp(prefix="gptcli-", suffix=suffix)  # mode 0600: a draft is private
    path = Path(name)
    keep = False
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as file:
            file.write(text)
        code = run_editor(command, path)
        try:
            edited = path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
        except UnicodeDecodeError:
            keep = True
            raise InputError(f"the editor saved text that is not UTF-8; it is kept in {path}") from None
        if code != 0:
            keep = edited != text
            kept = f"; what it saved is kept in {path}" if keep else ""
            raise GptcliError(f"the editor '{command[0]}' exited with status {code}{kept}")
        return edited
    finally:
        if not keep:
            path.unlink(missing_ok=True)
