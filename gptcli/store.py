"""The conversation history: a private SQLite file of sessions and messages (the only module that knows SQL)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptcli.config import data_dir, ensure_private_dir
from gptcli.errors import StoreError

if TYPE_CHECKING:
    from gptcli.config import Settings
    from gptcli.engines import Usage
    from gptcli.render import Env

STORE_FILENAME = "history.db"
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0  # SQLite waits this long for another writer before saying "busy"
BUSY_RETRY_S = 30.0  # and we retry a refused BEGIN IMMEDIATE for this long on top
TITLE_LENGTH = 60
MIN_ID_PREFIX = 4
RANKED_MATCHES = 20_000  # above this many matching messages, search lists the newest instead of scoring all
ROLES = ("system", "user", "assistant")
HIGHLIGHT_START, HIGHLIGHT_END = "\x02", "\x03"  # around matched words in SearchHit.snippet

# Forward migrations, in order: migration N brings the schema from user_version N-1 to N.
# Never edit a released one; append a new one instead.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "sessions and messages",
        """
        CREATE TABLE sessions (
            id       TEXT PRIMARY KEY,
            title    TEXT NOT NULL DEFAULT '',
            created  REAL NOT NULL,
            updated  REAL NOT NULL,
            model    TEXT,
            template TEXT,
            system   TEXT
        );
        CREATE INDEX sessions_by_updated ON sessions (updated);
        CREATE INDEX sessions_by_title ON sessions (title);
        CREATE TABLE messages (
            id                INTEGER PRIMARY KEY,
            session_id        TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            role              TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
            content           TEXT NOT NULL,
            created           REAL NOT NULL,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            tokens_per_second REAL,
            interrupted       INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_by_session ON messages (session_id, id);
        """,
    ),
    (
        "full-text search over messages (FTS5, external content)",
        """
        CREATE VIRTUAL TABLE messages_fts USING fts5 (
            content, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
        );
        CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        END;
        CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
            INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
            INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
        END;
        INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
        """,
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)


class StoreUnavailable(StoreError):
    """The history cannot be written here (read-only folder, full disk): gptcli can still answer."""


def default_store_path() -> Path:
    """Where the history lives: ``history.db`` in the data folder (``GPTCLI_HOME`` overrides)."""
    return data_dir() / STORE_FILENAME


class _Record:
    """A stored row as a dataclass; ``as_dict`` is what ``--json`` prints."""

    def as_dict(self) -> dict[str, Any]:
        return dict(asdict(self))  # type: ignore[call-overload]  # every subclass is a dataclass


@dataclass(frozen=True)
class SessionInfo(_Record):
    """One stored conversation, without its messages."""

    id: str
    title: str
    created: float
    updated: float
    model: str | None
    template: str | None
    system: str | None
    turns: int


@dataclass(frozen=True)
class StoredMessage(_Record):
    """One stored message; the token figures are set on replies only."""

    id: int
    session_id: str
    role: str
    content: str
    created: float
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_per_second: float | None
    interrupted: bool


@dataclass(frozen=True)
class SearchHit:
    """The best-matching message of one session; ``snippet`` marks matches with HIGHLIGHT_START/END."""

    session_id: str
    title: str
    message_id: int
    role: str
    created: float
    snippet: str
    rank: float

    def marked(self, start: str = "**", end: str = "**") -> str:
        """The snippet with the matches between ``start`` and ``end`` (Markdown bold by default)."""
        return self.snippet.replace(HIGHLIGHT_START, start).replace(HIGHLIGHT_END, end)

    def spans(self) -> list[tuple[str, bool]]:
        """The snippet as (text, is_match) pieces, for styled output."""
        pieces: list[tuple[str, bool]] = []
        for i, part in enumerate(self.snippet.split(HIGHLIGHT_START)):
            if i == 0:
                pieces.append((part, False))
                continue
            match, _, rest = part.partition(HIGHLIGHT_END)
            pieces.extend([(match, True), (rest, False)])
        return [p for p in pieces if p[0]]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["snippet"] = self.marked()
        return d


# ---------------------------------------------------------------- small helpers

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def new_session_id(now: float | None = None) -> str:
    """12 characters: 5 random, then 7 of the creation second.

    The random part comes first so that the start of an id tells sessions apart: a prefix of 4
    characters is one of about a million, where a time-first id shared its first 4 characters with
    every session of the same 9 hours. (Lists sort by the ``updated`` column, never by id.)
    """
    seconds = int(now if now is not None else time.time())
    stamp = "".join(_ID_ALPHABET[(seconds >> shift) & 31] for shift in range(30, -1, -5))
    random_part = "".join(secrets.choice(_ID_ALPHABET) for _ in range(5))
    return random_part + stamp


def make_title(text: str) -> str:
    """A session title from a prompt: its first non-empty line, spaces collapsed, at most 60 characters."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    title = " ".join(line.split())
    if len(title) > TITLE_LENGTH:
        title = title[: TITLE_LENGTH - 1].rstrip() + "…"
    return title


def fts_query(text: str) -> str:
    """A user's words as an FTS5 query: every word must appear; ``word*`` is a prefix; no syntax errors."""
    terms = []
    for word in text.replace("\x00", " ").split():  # SQLite ends a query string at a NUL
        prefix = word.endswith("*") and len(word) > 1
        word = word.rstrip("*") if prefix else word
        if not word:
            continue
        terms.append('"' + word.replace('"', '""') + '"' + ("*" if prefix else ""))
    return " ".join(terms)


_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (or SIGTERM) until the block ends, so a commit is never cut in half by one."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous: dict[int, Any] = {}
    signum: int
    try:
        for signum in _DEFERRED_SIGNALS:
            previous[signum] = signal.signal(signum, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main interpreter
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            handler = previous[signum]
            if callable(handler):
                handler(signum, None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), signum)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _unavailable(exc: BaseException) -> bool:
    """Errors that mean "cannot write here" (folder, permissions, disk) rather than "this file is broken"."""
    if isinstance(exc, IsADirectoryError):
        return False
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("readonly", "read-only", "unable to open", "disk i/o", "disk is full"))


# ---------------------------------------------------------------- the store


class ConversationStore:
    """Sessions and their messages in one SQLite file: WAL, one transaction per turn, FTS5 search."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = threading.RLock()

    # ------------------------------------------------------------ opening

    @classmethod
    def open(cls, path: Path | None = None) -> ConversationStore:
        """Open (creating and migrating as needed) the store at ``path`` (default: the data folder).

        A file that is not a SQLite database is never touched: ``StoreError`` names it. A folder
        or disk that refuses to be written gives ``StoreUnavailable``.
        """
        path = Path(path) if path is not None else default_store_path()
        try:
            ensure_private_dir(path.parent)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the history folder {path.parent}: {exc.strerror or exc}") from None
        _check_is_database(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the history file {path}: {exc.strerror or exc}") from None
        try:
            connection = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the history file {path}: {exc}") from None
        store = cls(connection, path)
        try:
            store._configure()
            store._migrate()
        except sqlite3.DatabaseError as exc:
            connection.close()
            if _unavailable(exc):
                raise StoreUnavailable(f"cannot write the history file {path}: {exc}") from None
            raise StoreError(f"history file {path} is not usable: {exc} (it was left untouched)") from None
        except BaseException:
            connection.close()
            raise
        return store

    def _configure(self) -> None:
        db = self._db
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA foreign_keys = ON")
        self._retry_busy(lambda: db.execute("PRAGMA journal_mode = WAL").fetchone())
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt

    def _migrate(self) -> None:
        version = self.schema_version()
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"history file {self.path} was written by a newer gptcli (schema {version}, this one knows"
                f" {SCHEMA_VERSION}): upgrade gptcli"
            )
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have won
            for number in range(version + 1, SCHEMA_VERSION + 1):
                _name, script = MIGRATIONS[number - 1]
                for statement in _statements(script):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ConversationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ transactions

    def _retry_busy(self, action: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + BUSY_RETRY_S
        delay = 0.01
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay + secrets.randbelow(10) / 1000)
                delay = min(delay * 2, 0.5)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE, retried while another process writes)."""
        with self._lock:
            db = self._db
            self._retry_busy(lambda: db.execute("BEGIN IMMEDIATE"))
            try:
                yield db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            self._retry_busy(lambda: db.execute("COMMIT"))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction whose SQLite failures become one-line ``StoreError``s."""
        try:
            with _sigint_deferred(), self._transaction() as db:
                yield db
        except sqlite3.Error as exc:
            cls = StoreUnavailable if _unavailable(exc) else StoreError
            raise cls(f"cannot save to the history file {self.path}: {exc}") from None

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read the history file {self.path}: {exc}") from None

    # ------------------------------------------------------------ sessions

    def create_session(
        self,
        *,
        model: str | None,
        template: str | None = None,
        system: str | None = None,
        title: str | None = None,
    ) -> SessionInfo:
        """A new, empty session; without a title, the first prompt will name it."""
        with self._writing() as db:
            return self._insert_session(db, model, template, system, title, time.time())

    def save_exchange(
        self,
        user: str,
        reply: str,
        usage: Usage | None = None,
        interrupted: bool = False,
        *,
        model: str | None,
        template: str | None = None,
        system: str | None = None,
        title: str | None = None,
    ) -> SessionInfo:
        """A new session holding one exchange, in one transaction (one-shot commands): never empty."""
        with self._writing() as db:
            now = time.time()
            info = self._insert_session(db, model, template, system, title, now)
            self.insert_row(db, info.id, "user", user, None, False, now)
            self.insert_row(db, info.id, "assistant", reply, usage, interrupted, now)
        return SessionInfo(info.id, info.title or make_title(user), now, now, model, template, system, 1)

    def _insert_session(
        self,
        db: sqlite3.Connection,
        model: str | None,
        template: str | None,
        system: str | None,
        title: str | None,
        now: float,
    ) -> SessionInfo:
        title = make_title(title) if title else ""
        for _ in range(20):
            session_id = new_session_id(now)
            try:
                db.execute(
                    "INSERT INTO sessions (id, title, created, updated, model, template, system)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (session_id, title, now, now, model, template, system),
                )
                return SessionInfo(session_id, title, now, now, model, template, system, 0)
            except sqlite3.IntegrityError:
                continue
        raise StoreError("could not make a unique session id")  # pragma: no cover - 20 random collisions

    def session(self, session_id: str) -> SessionInfo | None:
        rows = self._read(_SESSION_SELECT + " WHERE s.id = ?", (session_id,))
        return _session(rows[0]) if rows else None

    def latest_session(self) -> SessionInfo | None:
        """The most recently updated session, or ``None`` when there is none."""
        rows = self._read(_SESSION_SELECT + " ORDER BY s.updated DESC, s.rowid DESC LIMIT 1")
        return _session(rows[0]) if rows else None

    def list_sessions(self, limit: int = 20) -> list[SessionInfo]:
        """The ``limit`` most recently updated sessions, newest first."""
        rows = self._read(_SESSION_SELECT + " ORDER BY s.updated DESC, s.rowid DESC LIMIT ?", (max(0, limit),))
        return [_session(r) for r in rows]

    def count_sessions(self) -> int:
        return int(self._read("SELECT count(*) FROM sessions")[0][0])

    def find_session(self, name_or_id: str) -> SessionInfo:
        """A session by id, unique id prefix (4+ characters) or exact title; ``StoreError`` otherwise."""
        ref = name_or_id.strip()
        if not ref:
            raise StoreError("no session given: pass an id or a title (see `gptcli history list`)")
        found = self.session(ref) or self.session(ref.lower())
        if found:
            return found
        if len(ref) >= MIN_ID_PREFIX:
            prefix = ref.lower()
            rows = self._read(
                _SESSION_SELECT + " WHERE s.id >= ? AND s.id < ? ORDER BY s.id LIMIT 2", (prefix, prefix + "\U0010ffff")
            )
            if len(rows) == 1:
                return _session(rows[0])
            if len(rows) > 1:
                raise StoreError(f"'{ref}' is the start of several session ids: give more of it")
        for sql in (" WHERE s.title = ?", " WHERE s.title = ? COLLATE NOCASE"):
            rows = self._read(_SESSION_SELECT + sql + " ORDER BY s.updated DESC LIMIT 2", (ref,))
            if len(rows) == 1:
                return _session(rows[0])
            if len(rows) > 1:
                raise StoreError(f"several sessions are titled '{ref}': use the id (see `gptcli history list`)")
        raise StoreError(f"no session '{ref}' in the history (see `gptcli history list`)")

    def rename(self, session_id: str, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise StoreError("a session title cannot be empty")
        self._update_session(session_id, "title = ?", (title,))

    def set_system(self, session_id: str, system: str | None) -> None:
        self._update_session(session_id, "system = ?", (system,))

    def set_model(self, session_id: str, model: str | None) -> None:
        self._update_session(session_id, "model = ?", (model,))

    def _update_session(self, session_id: str, assignment: str, params: tuple[Any, ...]) -> None:
        with self._writing() as db:
            cursor = db.execute(f"UPDATE sessions SET {assignment} WHERE id = ?", (*params, session_id))
            if cursor.rowcount == 0:
                raise _unknown(session_id)

    def delete(self, session_id: str) -> None:
        """Delete a session and all its messages."""
        with self._writing() as db:
            if db.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount == 0:
                raise _unknown(session_id)

    # ------------------------------------------------------------ messages

    def add_turn(
        self,
        session_id: str,
        user: str,
        reply: str,
        usage: Usage | None = None,
        interrupted: bool = False,
    ) -> None:
        """Save one exchange (the prompt and the reply, maybe cut short) in one transaction."""
        with self._writing() as db:
            now = time.time()
            self.insert_row(db, session_id, "user", user, None, False, now)
            self.insert_row(db, session_id, "assistant", reply, usage, interrupted, now)

    def add_message(
        self,
        session_id: str,
        role: str,
        content: str,
        usage: Usage | None = None,
        interrupted: bool = False,
    ) -> int:
        """Save one message; returns its id."""
        with self._writing() as db:
            return self.insert_row(db, session_id, role, content, usage, interrupted, time.time())

    def insert_row(
        self,
        db: sqlite3.Connection,
        session_id: str,
        role: str,
        content: str,
        usage: Usage | None,
        interrupted: bool,
        now: float,
    ) -> int:
        """Insert one message row inside the caller's open transaction ``db`` (every write of a
        message goes through here: the place to inject a fault between two rows of a turn)."""
        if role not in ROLES:
            raise StoreError(f"unknown message role '{role}' (one of {', '.join(ROLES)})")
        if usage is not None:
            figures: tuple[Any, ...] = (usage.prompt_tokens, usage.completion_tokens, round(usage.tokens_per_second, 3))
        else:
            figures = (None, None, None)
        title_from = make_title(content) if role == "user" else ""
        cursor = db.execute(
            "UPDATE sessions SET updated = max(updated, ?),"
            " title = CASE WHEN title = '' THEN ? ELSE title END WHERE id = ?",
            (now, title_from, session_id),
        )
        if cursor.rowcount == 0:
            raise _unknown(session_id)
        cursor = db.execute(
            "INSERT INTO messages (session_id, role, content, created, prompt_tokens, completion_tokens,"
            " tokens_per_second, interrupted) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, role, content, now, *figures, int(bool(interrupted))),
        )
        return int(cursor.lastrowid or 0)

    def messages(self, session_id: str) -> list[StoredMessage]:
        """The session's messages, oldest first (empty for an unknown session)."""
        rows = self._read(
            "SELECT id, session_id, role, content, created, prompt_tokens, completion_tokens,"
            " tokens_per_second, interrupted FROM messages WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [StoredMessage(*row[:8], bool(row[8])) for row in rows]  # type: ignore[call-arg]

    def drop_last_exchange(self, session_id: str) -> None:
        """Remove the last prompt and everything after it (its reply): ``/undo``."""
        with self._writing() as db:
            row = db.execute(
                "SELECT max(id) FROM messages WHERE session_id = ? AND role = 'user'", (session_id,)
            ).fetchone()
            if row[0] is None:
                row = db.execute(
                    "SELECT max(id) FROM messages WHERE session_id = ? AND role = 'assistant'", (session_id,)
                ).fetchone()
            if row[0] is not None:
                db.execute("DELETE FROM messages WHERE session_id = ? AND id >= ?", (session_id, row[0]))

    # ------------------------------------------------------------ search

    def search(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Sessions whose messages contain every word of ``query``, best match first (FTS5 bm25).

        One hit per session: its best message, with a snippet around the matches. Words written
        without spaces (Chinese, Japanese) that the word index cannot split are found by substring.
        """
        match = fts_query(query)
        if not match or limit <= 0:
            return []
        with self._lock:
            try:
                hits = self._fts_search(match, limit)
                if not hits and any(ord(ch) > 0x2E7F for ch in query):
                    hits = self._substring_search(query.strip(), limit)
            except sqlite3.Error as exc:
                raise StoreError(f"cannot search the history file {self.path}: {exc}") from None
        return hits

    def _fts_search(self, match: str, limit: int) -> list[SearchHit]:
        db = self._db
        best: dict[str, tuple[int, float]] = {}
        batch = max(limit * 4, 50)
        offset = 0
        # bm25 scores every matching message; a word found nearly everywhere says little about
        # relevance anyway, so past RANKED_MATCHES the newest matches come first (fast at any size)
        (matches,) = db.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH ?", (match,)).fetchone()
        order = "rank" if matches <= RANKED_MATCHES else "rowid DESC"
        while len(best) < limit:
            ranked = db.execute(
                f"SELECT rowid, {'rank' if order == 'rank' else '0.0'} FROM messages_fts WHERE messages_fts MATCH ?"
                f" ORDER BY {order} LIMIT ? OFFSET ?",
                (match, batch, offset),
            ).fetchall()
            if not ranked:
                break
            marks = ",".join("?" * len(ranked))
            owners = dict(db.execute(f"SELECT id, session_id FROM messages WHERE id IN ({marks})", [r[0] for r in ranked]))
            for message_id, rank in ranked:
                session_id = owners.get(message_id)
                if session_id is not None and session_id not in best:
                    best[session_id] = (message_id, rank)
                    if len(best) == limit:
                        break
            if len(ranked) < batch:
                break
            offset += batch
            batch *= 4
        if not best:
            return []
        ids = [message_id for message_id, _ in best.values()]
        marks = ",".join("?" * len(ids))
        rows = db.execute(
            "SELECT f.rowid, m.session_id, s.title, m.role, m.created,"
            f" snippet(messages_fts, 0, '{HIGHLIGHT_START}', '{HIGHLIGHT_END}', '…', 16)"
            " FROM messages_fts f JOIN messages m ON m.id = f.rowid JOIN sessions s ON s.id = m.session_id"
            f" WHERE messages_fts MATCH ? AND f.rowid IN ({marks})",
            (match, *ids),
        ).fetchall()
        ranks = {message_id: rank for message_id, rank in best.values()}
        hits = [SearchHit(r[1], r[2], r[0], r[3], r[4], r[5], ranks[r[0]]) for r in rows]
        return sorted(hits, key=lambda h: (h.rank, -h.message_id))

    def _substring_search(self, text: str, limit: int) -> list[SearchHit]:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            "SELECT m.id, m.session_id, s.title, m.role, m.created, m.content FROM messages m"
            " JOIN sessions s ON s.id = m.session_id WHERE m.content LIKE ? ESCAPE '\\'"
            " ORDER BY m.id DESC",
            (pattern,),
        )
        hits: list[SearchHit] = []
        seen: set[str] = set()
        for message_id, session_id, title, role, created, content in rows:
            if session_id in seen:
                continue
            seen.add(session_id)
            at = content.find(text)
            start, end = max(0, at - 30), at + len(text) + 30
            snippet = (
                ("…" if start else "")
                + content[start:at]
                + HIGHLIGHT_START
                + text
                + HIGHLIGHT_END
                + content[at + len(text) : end]
                + ("…" if end < len(content) else "")
            )
            hits.append(SearchHit(session_id, title, message_id, role, created, " ".join(snippet.split()), 0.0))
            if len(hits) == limit:
                break
        return hits

    # ------------------------------------------------------------ maintenance

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])


_SESSION_SELECT = (
    "SELECT s.id, s.title, s.created, s.updated, s.model, s.template, s.system,"
    " (SELECT count(*) FROM messages m WHERE m.session_id = s.id AND m.role = 'user') FROM sessions s"
)


def _session(row: Any) -> SessionInfo:
    return SessionInfo(*row)


def _unknown(session_id: str) -> StoreError:
    return StoreError(f"no session '{session_id}' in the history (see `gptcli history list`)")


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (trigger bodies kept whole)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _check_is_database(path: Path) -> None:
    """Refuse, without writing a byte, a path that is a folder or a file that is not SQLite."""
    if path.is_dir():
        raise StoreError(f"history path {path} is a folder, not a database file")
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except PermissionError:
        raise StoreUnavailable(f"cannot read the history file {path}: permission denied") from None
    except OSError as exc:
        raise StoreUnavailable(f"cannot read the history file {path}: {exc.strerror or exc}") from None
    if header and header != SQLITE_HEADER:
        raise StoreError(
            f"history file {path} is not a SQLite database (it was left untouched): move it away,"
            " or use --no-history"
        )


def open_history(settings: Settings, env: Env) -> ConversationStore | None:
    """The store for saving, or ``None`` when history is off or cannot be written (with a notice)."""
    if not settings.history:
        return None
    try:
        return ConversationStore.open()
    except StoreUnavailable as exc:
        env.notice(f"history not saved: {exc}")
        return None


# ---------------------------------------------------------------- export


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def export_json(info: SessionInfo, messages: list[StoredMessage]) -> str:
    """The session and its messages as one JSON document."""
    document = {
        "session": {**info.as_dict(), "created_iso": _when(info.created), "updated_iso": _when(info.updated)},
        "messages": [m.as_dict() for m in messages],
    }
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


_ROLE_HEADINGS = {"system": "System", "user": "You", "assistant": "Assistant"}


def export_markdown(info: SessionInfo, messages: list[StoredMessage]) -> str:
    """The session as a Markdown document: a heading, a details line, then one section per message."""
    details = [f"session `{info.id}`", _when(info.created)]
    if info.model:
        details.append(f"model {info.model}")
    if info.template:
        details.append(f"template {info.template}")
    lines = [f"# {info.title or 'Untitled'}", "", " · ".join(details), ""]
    shown_system = any(m.role == "system" for m in messages)
    if info.system and not shown_system:
        lines += ["## System", "", info.system.strip(), ""]
    for message in messages:
        heading = _ROLE_HEADINGS.get(message.role, message.role)
        if message.interrupted:
            heading += " (interrupted)"
        lines += [f"## {heading}", "", message.content.strip() or "*(empty)*", ""]
    return "\n".join(lines).rstrip("\n") + "\n"
