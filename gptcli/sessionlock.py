"""One writer per conversation: a chat holds a lock on the session it adds turns to."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO

from gptcli.errors import GptcliError

# the locks this process holds, by session id; the kernel drops them when the process ends, even
# after kill -9, so a crashed chat never leaves a conversation locked
_held: dict[str, IO[str]] = {}


class SessionBusy(GptcliError):
    """Another gptcli process is adding turns to this conversation."""


def lock_folder() -> Path:
    from gptcli.config import data_dir, ensure_private_dir

    return ensure_private_dir(data_dir() / "locks")


def claim(session_id: object) -> bool:
    """Hold the lock of ``session_id`` (giving up any other this process holds).

    Two ``chat -c`` on one conversation would interleave their turns (B1, A1, B2, A2); the second
    is refused instead. ``False`` when locks cannot be taken here (an unwritable data folder, no
    ``fcntl``): the chat goes on unguarded, as it did before locks existed.
    """
    key = str(session_id)
    if key in _held:
        return True
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return False
    try:
        path = lock_folder() / f"{key}.lock"
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while the lock is held
    except OSError:
        return False
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        who = f" (process {holder})" if holder.isdigit() else ""
        raise SessionBusy(
            f"conversation {key} is open in another gptcli chat{who}: finish that one first,"
            " or start a new conversation (without -c)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    release_all()
    _held[key] = handle
    return True


def release_all() -> None:
    """Let go of every lock this process holds."""
    while _held:
        _, handle = _held.popitem()
        with contextlib.suppress(OSError):
            handle.close()


def forget(session_id: object) -> None:
    """Remove the lock file of a deleted conversation (unless a chat still holds it)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return
    key = str(session_id)
    held = _held.pop(key, None)
    path = lock_folder() / f"{key}.lock"
    try:
        handle = held or open(path, "a+", encoding="utf-8")  # noqa: SIM115
    except OSError:
        return
    try:
        if held is None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except OSError:
        pass  # another chat has it open: it stays until that chat ends
    finally:
        handle.close()
