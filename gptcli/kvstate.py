"""Saved KV-cache states of chat sessions, so that resuming a long chat does not re-read it all."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gptcli.config import data_dir, ensure_private_dir
from gptcli.engines import Stateful
from gptcli.textio import atomic_write_bytes

MAGIC = b"GPTCLIKV"
FORMAT_VERSION = 1
DEFAULT_LIMIT_BYTES = 512 * 1024 * 1024


class KVStateStore:
    """One file per session: a versioned header (validity key, tokens, checksum), then the KV bytes.

    Files are private (0600 in a 0700 folder); the folder is kept under ``limit_bytes`` by evicting
    the least recently used states. A stale (other model or settings) or corrupt file is ignored.
    """

    def __init__(self, folder: Path | None = None, limit_bytes: int = DEFAULT_LIMIT_BYTES) -> None:
        self.folder = folder or data_dir() / "kv"
        self.limit_bytes = limit_bytes

    def path_for(self, session_id: str) -> Path:
        safe = "".join(ch for ch in session_id if ch.isalnum() or ch in "-_") or "session"
        return self.folder / f"{safe}.kv"

    def save(self, session_id: str, engine: Stateful) -> Path | None:
        tokens, data = engine.export_state()
        if not tokens or len(data) > self.limit_bytes:
            return None
        header = json.dumps(
            {
                "version": FORMAT_VERSION,
                "key": engine.state_key(),
                "tokens": tokens,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        ).encode()
        ensure_private_dir(self.folder)
        path = self.path_for(session_id)
        atomic_write_bytes(path, MAGIC + struct.pack("<Q", len(header)) + header + data, mode=0o600)
        self.evict(keep=path)
        return path

    def load(self, session_id: str, engine: Stateful, notice: Callable[[str], None] | None = None) -> int:
        """Restore the session's state into the engine; returns the tokens restored (0: none)."""
        path = self.path_for(session_id)
        try:
            blob = path.read_bytes()
        except OSError:
            return 0
        why = None
        try:
            if blob[:8] != MAGIC:
                raise ValueError("not a gptcli state file")
            (length,) = struct.unpack("<Q", blob[8:16])
            header = json.loads(blob[16 : 16 + length])
            data = blob[16 + length :]
            if header.get("version") != FORMAT_VERSION:
                why = "it was saved by another version"
            elif header.get("key") != engine.state_key():
                why = "the model or the context settings changed"
            elif hashlib.sha256(data).hexdigest() != header.get("sha256"):
                why = "it is corrupt"
            elif not engine.import_state(list(header["tokens"]), data):
                why = "llama.cpp refused it"
            else:
                with contextlib.suppress(OSError):
                    os.utime(path)  # recently used: evicted last
                return len(header["tokens"])
        except (ValueError, KeyError, TypeError, struct.error):
            why = "it is corrupt"
        if notice:
            notice(f"ignored the saved model state of this session ({why}); re-reading the conversation")
        with contextlib.suppress(OSError):
            path.unlink()
        return 0

    def forget(self, session_id: str) -> None:
        with contextlib.suppress(OSError):
            self.path_for(session_id).unlink()

    def evict(self, keep: Path | None = None) -> None:
        """Delete the least recently used states until the folder fits the limit."""
        try:
            files = [(p.stat().st_mtime, p.stat().st_size, p) for p in self.folder.glob("*.kv")]
        except OSError:
            return
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.limit_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size


def store_for(settings: Any, engine: Any) -> KVStateStore | None:
    """The state store when the engine can save its KV cache and ``kv_cache_mb`` allows it."""
    limit_mb = getattr(settings, "kv_cache_mb", 0)
    if not limit_mb or not isinstance(engine, Stateful):
        return None
    return KVStateStore(limit_bytes=limit_mb * 1024 * 1024)


def restore_session(settings: Any, session_id: Any, engine: Any, notice: Callable[[str], None]) -> int:
    """Load the saved KV state of ``session_id`` into the engine, if there is a valid one."""
    store = store_for(settings, engine)
    if store is None or session_id is None:
        return 0
    return store.load(str(session_id), engine, notice)


def forget_session(session_id: str) -> None:
    """Delete the saved KV state of a conversation that was deleted (it is derived from its text)."""
    KVStateStore().forget(str(session_id))


def keep_session(settings: Any, session_id: Any, engine: Any, notice: Callable[[str], None]) -> None:
    """Save the engine's KV cache for ``session_id``; a failure costs only speed on the next resume."""
    store = store_for(settings, engine)
    if store is None or session_id is None:
        return
    try:
        store.save(str(session_id), engine)
    except OSError as exc:
        notice(f"the model state was not saved ({exc.strerror or exc}); resuming will re-read the chat")
