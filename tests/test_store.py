"""The history store on real SQLite files: round trips, lookups, search, export, migrations, refusals."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from gptcli.config import load_settings
from gptcli.engines import Usage
from gptcli.errors import StoreError
from gptcli.render import Env
from gptcli.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    ConversationStore,
    default_store_path,
    export_json,
    export_markdown,
    make_title,
    open_history,
)
from tests.conftest import TextStream


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.db"


@pytest.fixture
def store(db_path: Path):
    with ConversationStore.open(db_path) as s:
        yield s


def usage(prompt: int = 12, completion: int = 30) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, time_to_first_token=0.2, total_time=1.2)


# ---------------------------------------------------------------- round trip


def test_sessions_and_messages_round_trip_through_a_reopened_file(db_path: Path):
    with ConversationStore.open(db_path) as store:
        info = store.create_session(model="smollm2", template="ask", system="Be brief.")
        store.add_turn(info.id, "What is WAL?", "Write-ahead logging.", usage(12, 30))
        store.add_turn(info.id, "And FTS5?", "Full-text search", usage(40, 3), interrupted=True)
    with ConversationStore.open(db_path) as store:
        again = store.find_session(info.id)
        assert (again.model, again.template, again.system, again.turns) == ("smollm2", "ask", "Be brief.", 2)
        assert again.title == "What is WAL?"
        assert again.updated >= again.created
        rows = store.messages(info.id)
    assert [(m.role, m.content, m.interrupted) for m in rows] == [
        ("user", "What is WAL?", False),
        ("assistant", "Write-ahead logging.", False),
        ("user", "And FTS5?", False),
        ("assistant", "Full-text search", True),
    ]
    reply = rows[1]
    assert (reply.prompt_tokens, reply.completion_tokens) == (12, 30)
    assert reply.tokens_per_second == pytest.approx(29 / 1.0)
    assert rows[0].prompt_tokens is None and rows[0].tokens_per_second is None
    assert [m.id for m in rows] == sorted(m.id for m in rows)


def test_save_exchange_makes_a_one_exchange_session_at_once(store: ConversationStore):
    info = store.save_exchange("Name a colour.", "Blue", usage(), True, model="m", template="ask", system="sys")
    assert (info.title, info.turns, info.template, info.system) == ("Name a colour.", 1, "ask", "sys")
    assert store.find_session(info.id) == info
    assert [(m.role, m.interrupted) for m in store.messages(info.id)] == [("user", False), ("assistant", True)]
    titled = store.save_exchange("q", "a", model=None, title="draft: notes")
    assert store.find_session(titled.id).title == "draft: notes"


def test_title_comes_from_the_first_prompt_and_is_kept(store: ConversationStore):
    info = store.create_session(model=None)
    assert info.title == ""
    store.add_turn(info.id, "\n  Plan a   trip to Lisbon\nwith kids", "Sure.")
    store.add_turn(info.id, "Second question", "Answer.")
    assert store.find_session(info.id).title == "Plan a trip to Lisbon"
    long = store.create_session(model=None)
    store.add_message(long.id, "user", "word " * 40)
    title = store.find_session(long.id).title
    assert len(title) <= 60 and title.endswith("…")
    named = store.create_session(model=None, title="my notes")
    store.add_turn(named.id, "first prompt", "reply")
    assert store.find_session(named.id).title == "my notes"


def test_add_message_returns_ids_and_rejects_bad_roles_and_sessions(store: ConversationStore):
    info = store.create_session(model="m")
    first = store.add_message(info.id, "system", "You are terse.")
    second = store.add_message(info.id, "user", "hi")
    assert second > first
    with pytest.raises(StoreError, match="role"):
        store.add_message(info.id, "tool", "x")
    with pytest.raises(StoreError, match="no session 'nope'"):
        store.add_turn("nope", "a", "b")
    assert len(store.messages(info.id)) == 2


def test_session_ids_are_short_unique_and_their_start_is_random(store: ConversationStore):
    made = [store.create_session(model=None).id for _ in range(300)]  # all within a second or two
    assert len(set(made)) == 300
    assert all(len(i) == 12 and i.isalnum() and i == i.lower() for i in made)
    # the start is random, so a short prefix tells sessions made in the same second apart
    assert len({i[:4] for i in made}) > 290


def test_list_is_newest_first_and_continuing_moves_a_session_up(store: ConversationStore):
    made = []
    for n in range(5):
        info = store.create_session(model="m")
        store.add_turn(info.id, f"question {n}", "answer")
        made.append(info.id)
    assert [s.id for s in store.list_sessions()] == made[::-1]
    assert [s.id for s in store.list_sessions(limit=2)] == made[:-3:-1]
    store.add_turn(made[0], "follow-up", "more")
    assert store.latest_session().id == made[0]  # type: ignore[union-attr]
    assert store.list_sessions()[0].turns == 2


def test_latest_session_of_an_empty_store_is_none(store: ConversationStore):
    assert store.latest_session() is None
    assert store.list_sessions() == []


def test_find_session_by_id_prefix_and_title(store: ConversationStore, monkeypatch: pytest.MonkeyPatch):
    ids = iter(["k3v9a1nh69jcq", "k3v9b1nh69jcq"])  # two ids that share their first 4 characters
    monkeypatch.setattr("gptcli.store.new_session_id", lambda now=None: next(ids)[:12])
    a = store.create_session(model="m", title="Trip planning")
    b = store.create_session(model="m", title="Budget 2025")
    monkeypatch.undo()
    assert store.find_session(a.id).id == a.id
    assert store.find_session(a.id.upper()).id == a.id
    assert store.find_session(b.id[:5]).id == b.id
    assert store.find_session("Trip planning").id == a.id
    assert store.find_session("trip PLANNING").id == a.id  # case does not matter when unambiguous
    with pytest.raises(StoreError, match="several session ids"):
        store.find_session(a.id[:4])
    with pytest.raises(StoreError, match="no session 'holiday'"):
        store.find_session("holiday")
    store.create_session(model="m", title="Trip planning")
    with pytest.raises(StoreError, match="several sessions are titled"):
        store.find_session("Trip planning")


def test_rename_set_system_set_model(store: ConversationStore):
    info = store.create_session(model="old", system="one")
    store.rename(info.id, "  new   name ")
    store.set_system(info.id, "two")
    store.set_model(info.id, "new-model")
    again = store.find_session("new name")
    assert (again.id, again.system, again.model) == (info.id, "two", "new-model")
    with pytest.raises(StoreError, match="cannot be empty"):
        store.rename(info.id, "  ")
    with pytest.raises(StoreError):
        store.rename("missing-id", "x")


def test_delete_removes_the_messages_and_their_search_entries(store: ConversationStore):
    keep = store.create_session(model="m")
    store.add_turn(keep.id, "tell me about quokkas", "Quokkas live on Rottnest Island.")
    gone = store.create_session(model="m")
    store.add_turn(gone.id, "more about quokkas please", "They smile.")
    store.delete(gone.id)
    assert store.messages(gone.id) == []
    assert [h.session_id for h in store.search("quokkas")] == [keep.id]
    with pytest.raises(StoreError):
        store.find_session(gone.id)
    with pytest.raises(StoreError):
        store.delete(gone.id)
    assert store.integrity_check() == "ok"


def test_drop_last_exchange_removes_the_last_prompt_and_its_reply(store: ConversationStore):
    info = store.create_session(model="m")
    store.add_turn(info.id, "one", "first answer")
    store.add_turn(info.id, "two", "second answer")
    store.drop_last_exchange(info.id)
    assert [m.content for m in store.messages(info.id)] == ["one", "first answer"]
    assert store.search("second") == []
    store.add_message(info.id, "user", "unanswered")
    store.drop_last_exchange(info.id)
    assert [m.content for m in store.messages(info.id)] == ["one", "first answer"]
    store.drop_last_exchange(info.id)
    store.drop_last_exchange(info.id)  # nothing left: no error
    assert store.messages(info.id) == [] and store.find_session(info.id).turns == 0


# ---------------------------------------------------------------- search


def test_search_ranks_the_better_match_first_with_a_highlighted_snippet(store: ConversationStore):
    weak = store.create_session(model="m")
    store.add_turn(weak.id, "groceries", "Buy bread, milk, eggs, apples, cheese, butter and one docker sticker for the fridge.")
    strong = store.create_session(model="m")
    store.add_turn(strong.id, "docker compose help", "Docker compose starts docker containers.")
    other = store.create_session(model="m")
    store.add_turn(other.id, "unrelated", "Nothing to see.")
    hits = store.search("docker")
    assert [h.session_id for h in hits] == [strong.id, weak.id]
    assert hits[0].rank <= hits[1].rank
    assert "**docker" in hits[0].marked().lower()
    assert any(matched and piece.lower() == "docker" for piece, matched in hits[1].spans())
    assert hits[0].title == "docker compose help"


def test_search_needs_every_word_and_gives_one_hit_per_session(store: ConversationStore):
    info = store.create_session(model="m")
    store.add_turn(info.id, "paris weather", "Paris is rainy; the weather in Paris changes.")
    store.add_turn(info.id, "paris food", "Croissants.")
    other = store.create_session(model="m")
    store.add_turn(other.id, "paris museums", "The Louvre.")
    assert [h.session_id for h in store.search("paris weather")] == [info.id]
    hits = store.search("paris")
    assert sorted(h.session_id for h in hits) == sorted([info.id, other.id])
    assert store.search("paris", limit=1) and len(store.search("paris", limit=1)) == 1


def test_a_word_found_almost_everywhere_lists_the_newest_matches(store: ConversationStore, monkeypatch):
    made = []
    for n in range(5):
        info = store.create_session(model="m")
        store.add_turn(info.id, f"common word {n}", "common " * (5 - n))
        made.append(info.id)
    ranked = [h.session_id for h in store.search("common")]
    assert ranked[0] == made[0]  # bm25: the message saying it most often
    monkeypatch.setattr("gptcli.store.RANKED_MATCHES", 3)
    assert [h.session_id for h in store.search("common")] == made[::-1]
    assert [h.session_id for h in store.search("common", limit=2)] == made[:2:-1]


def test_search_accepts_any_text_and_prefixes(store: ConversationStore):
    info = store.create_session(model="m")
    store.add_turn(info.id, 'What does "AND" OR NOT(x) mean?', "Operators: piano-like keys.")
    for query in ['"AND"', "NOT(x)", "OR", "a*b", "'", "NEAR(", "-", "*"]:
        store.search(query)  # never an FTS5 syntax error
    assert [h.session_id for h in store.search("pian*")] == [info.id]
    assert store.search("   ") == []


def test_search_is_accent_insensitive_and_finds_chinese_substrings(store: ConversationStore):
    info = store.create_session(model="m")
    store.add_turn(info.id, "Café in Zürich", "中国的首都是北京。")
    assert [h.session_id for h in store.search("cafe zurich")] == [info.id]
    hits = store.search("首都")
    assert [h.session_id for h in hits] == [info.id]
    assert "**首都**" in hits[0].marked()


# ---------------------------------------------------------------- export


def test_markdown_and_json_exports(store: ConversationStore):
    info = store.create_session(model="smollm2", template="ask", system="Be brief.")
    store.add_turn(info.id, "Capital of France?", "**Paris**.", usage())
    store.add_turn(info.id, "And Italy?", "Rome", interrupted=True)
    info = store.find_session(info.id)
    messages = store.messages(info.id)
    md = export_markdown(info, messages)
    assert md.startswith("# Capital of France?\n")
    assert info.id in md and "model smollm2" in md
    assert md.index("## System") < md.index("Be brief.") < md.index("## You") < md.index("**Paris**.")
    assert "## Assistant (interrupted)\n\nRome" in md
    doc = json.loads(export_json(info, messages))
    assert doc["session"]["id"] == info.id and doc["session"]["turns"] == 2
    assert [m["role"] for m in doc["messages"]] == ["user", "assistant", "user", "assistant"]
    assert doc["messages"][1]["completion_tokens"] == 30 and doc["messages"][3]["interrupted"] is True


def test_make_title():
    assert make_title("  \n hello   world \n second") == "hello world"
    assert make_title("") == ""


# ---------------------------------------------------------------- files, permissions, refusals


def test_default_path_is_in_the_data_folder(isolated_home: Path):
    assert default_store_path() == isolated_home / "history.db"


def test_file_is_private_and_folder_too(db_path: Path):
    with ConversationStore.open(db_path) as store:
        info = store.create_session(model="m")
        store.add_turn(info.id, "q", "a")
        for path in db_path.parent.glob("history.db*"):  # the WAL and shared-memory files too
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


def test_an_existing_world_readable_file_is_made_private(db_path: Path):
    with ConversationStore.open(db_path):
        pass
    db_path.chmod(0o644)
    with ConversationStore.open(db_path):
        pass
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_wal_mode_and_foreign_keys(store: ConversationStore, db_path: Path):
    assert sqlite3.connect(db_path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # foreign keys on: deleting a conversation deletes its messages (and their search rows) with it
    info = store.create_session(model="m")
    store.add_turn(info.id, "question", "answer")
    store.delete(info.id)
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT COUNT(*) FROM messages WHERE session_id = ?", (info.id,)).fetchone()[0] == 0


@pytest.mark.parametrize("content", [b"hello, I am a text file\n" * 40, b"\x00" * 4096, b"SQLite format 2\x00 nope"])
def test_a_file_that_is_not_a_database_is_a_clear_error_and_left_untouched(db_path: Path, content: bytes):
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(content)
    db_path.chmod(0o640)
    before = db_path.stat()
    with pytest.raises(StoreError) as err:
        ConversationStore.open(db_path)
    assert str(db_path) in str(err.value) and "not a SQLite database" in str(err.value)
    assert db_path.read_bytes() == content
    after = db_path.stat()
    assert (after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (before.st_mtime_ns, 0o640)
    assert sorted(p.name for p in db_path.parent.iterdir()) == ["history.db"]  # no -wal, no -journal


def test_a_truncated_database_is_a_clear_error_and_left_untouched(db_path: Path, tmp_path: Path):
    with ConversationStore.open(db_path) as store:
        info = store.create_session(model="m")
        for n in range(200):
            store.add_turn(info.id, f"question {n} " * 20, "answer " * 50)
    broken = tmp_path / "broken.db"
    data = db_path.read_bytes()
    # keep the header, scramble the schema page
    broken.write_bytes(data[:100] + b"\xff" * 4000 + data[4100:8192])
    with pytest.raises(StoreError) as err:
        ConversationStore.open(broken)
    assert str(broken) in str(err.value)
    assert broken.read_bytes()[:100] == data[:100] and broken.stat().st_size == 8192


def test_a_folder_at_the_history_path_is_an_error(db_path: Path):
    db_path.mkdir(parents=True)
    with pytest.raises(StoreError, match="is a folder"):
        ConversationStore.open(db_path)


def test_open_history_honours_the_setting_and_survives_an_unwritable_folder(isolated_home: Path, monkeypatch):
    env = Env(stdin=TextStream(), stdout=TextStream(), stderr=TextStream())
    settings = load_settings()
    assert open_history(settings.with_flags(history=False), env) is None
    assert not default_store_path().exists()  # history off: not even created

    blocker = isolated_home / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GPTCLI_HOME", str(blocker / "sub"))
    assert open_history(settings, env) is None
    notice = " ".join(env.stderr.getvalue().split())  # type: ignore[attr-defined]
    assert notice.startswith("history not saved: cannot create the history folder") and "Not a directory" in notice

    monkeypatch.setenv("GPTCLI_HOME", str(isolated_home / "fine"))
    store = open_history(settings, env)
    assert store is not None and store.path == isolated_home / "fine" / "history.db"
    store.close()


# ---------------------------------------------------------------- migrations


def test_migrations_are_a_named_ordered_list_starting_with_the_first_schema():
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 2
    assert all(name and "CREATE" in sql for name, sql in MIGRATIONS)
    assert "CREATE TABLE sessions" in MIGRATIONS[0][1]


def test_a_database_with_only_the_first_schema_is_migrated_and_keeps_its_history(db_path: Path):
    db_path.parent.mkdir(parents=True)
    old = sqlite3.connect(db_path)
    old.executescript(MIGRATIONS[0][1])
    old.execute("PRAGMA user_version = 1")
    old.execute(
        "INSERT INTO sessions (id, title, created, updated, model) VALUES ('oldsession01', 'Old chat', 1.0, 2.0, 'm')"
    )
    old.execute(
        "INSERT INTO messages (session_id, role, content, created) VALUES"
        " ('oldsession01', 'user', 'remember the zanzibar plan', 1.0),"
        " ('oldsession01', 'assistant', 'The zanzibar plan is noted.', 2.0)"
    )
    old.commit()
    old.close()

    with ConversationStore.open(db_path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        info = store.find_session("Old chat")
        assert info.turns == 1 and [m.content for m in store.messages(info.id)][0] == "remember the zanzibar plan"
        assert [h.session_id for h in store.search("zanzibar")] == ["oldsession01"]  # old rows are indexed
        store.add_turn(info.id, "and the quokka plan?", "Also noted.")
        assert [h.session_id for h in store.search("quokka")] == ["oldsession01"]
        assert store.integrity_check() == "ok"


def test_a_database_from_a_newer_gptcli_is_refused(db_path: Path):
    with ConversationStore.open(db_path):
        pass
    con = sqlite3.connect(db_path)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer gptcli"):
        ConversationStore.open(db_path)
    assert sqlite3.connect(db_path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_opening_twice_does_not_rerun_migrations(db_path: Path):
    with ConversationStore.open(db_path) as store:
        info = store.create_session(model="m")
        store.add_turn(info.id, "hello there", "hi")
    with ConversationStore.open(db_path) as store:
        assert [h.session_id for h in store.search("hello")] == [info.id]
        assert len(store.messages(info.id)) == 2
    assert os.path.getsize(db_path) > 0


def test_a_ctrl_c_during_a_save_waits_until_the_turn_is_committed(store: ConversationStore, monkeypatch):
    import signal

    info = store.create_session(model="m")
    real_insert = ConversationStore.insert_row
    calls = []

    def insert_then_ctrl_c(self, db, session_id, role, *args):  # type: ignore[no-untyped-def]
        calls.append(role)
        if role == "user":
            os.kill(os.getpid(), signal.SIGINT)  # between the prompt row and the reply row
        return real_insert(self, db, session_id, role, *args)

    monkeypatch.setattr(ConversationStore, "insert_row", insert_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        store.add_turn(info.id, "question", "answer")
    assert calls == ["user", "assistant"]
    assert [m.content for m in store.messages(info.id)] == ["question", "answer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
