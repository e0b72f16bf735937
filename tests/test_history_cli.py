"""One-shot commands saving to the history, --continue/--session, and the `gptcli history` commands."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gptcli.engines import Chunk
from gptcli.store import ConversationStore, default_store_path
from tests.fakes import FakeEngine
from tests.test_oneshot import terminal_screen


def saved() -> list[tuple[str, list[tuple[str, str, bool]]]]:
    """Every saved session, oldest first: (title, [(role, content, interrupted)])."""
    with ConversationStore.open() as store:
        sessions = store.list_sessions(limit=1000)[::-1]
        return [(s.title, [(m.role, m.content, m.interrupted) for m in store.messages(s.id)]) for s in sessions]


def ids() -> list[str]:
    with ConversationStore.open() as store:
        return [s.id for s in store.list_sessions(limit=1000)]


# ---------------------------------------------------------------- one-shot saving


def test_ask_saves_a_one_exchange_session(cli, fake_engine):
    result = cli(["ask", "What is GGUF?", "--temperature", "0"])
    assert result.exit_code == 0, result.stderr
    assert saved() == [
        ("What is GGUF?", [("user", "What is GGUF?", False), ("assistant", "Hello from the fake engine.", False)])
    ]
    with ConversationStore.open() as store:
        info = store.latest_session()
        assert info is not None
        assert (info.model, info.template, info.turns) == ("fake", "ask", 1)
        assert info.system and "gptcli" in info.system  # the ask template's system prompt
        reply = store.messages(info.id)[1]
        assert reply.completion_tokens == 5 and reply.prompt_tokens and reply.prompt_tokens > 0


def test_ask_with_piped_material_saves_what_the_model_saw(cli, fake_engine):
    cli(["ask", "summarize this"], stdin="Meeting moved to Friday.\n")
    (title, messages), = saved()
    assert title == "summarize this"
    assert "Meeting moved to Friday." in messages[0][1]


def test_draft_is_saved_with_its_template_name(cli, fake_engine):
    result = cli(["draft", "an email to the team"], stdin="- launch moved to May 3\n")
    assert result.exit_code == 0, result.stderr
    (title, messages), = saved()
    assert title == "draft: an email to the team"
    assert "launch moved to May 3" in messages[0][1]
    with ConversationStore.open() as store:
        info = store.latest_session()
        assert info is not None and info.template == "draft" and "writer" in (info.system or "")


def test_no_history_flag_and_config_key_save_nothing(cli, fake_engine, isolated_home: Path, monkeypatch):
    assert cli(["ask", "secret one", "--no-history"]).exit_code == 0
    assert not default_store_path().exists()
    (isolated_home / "config.toml").write_text("history = false\n")
    assert cli(["ask", "secret two"]).exit_code == 0
    assert not default_store_path().exists()
    monkeypatch.setenv("GPTCLI_HISTORY", "0")
    (isolated_home / "config.toml").unlink()
    assert cli(["ask", "secret three"]).exit_code == 0
    assert not default_store_path().exists()


def test_commands_that_do_not_need_history_do_not_touch_it(cli, fake_engine):
    for argv in (["--version"], ["ask", "--help"], ["history", "path"], ["templates", "list"]):
        cli(argv)
    assert not default_store_path().exists()
    assert cli(["history", "path"]).stdout == f"{default_store_path()}\n"


class InterruptedEngine(FakeEngine):
    """Streams a few words, then the user presses Ctrl-C."""

    def _chunks(self, text: str, prompt_tokens: int) -> Iterator[Chunk]:
        yield from [Chunk("Partial "), Chunk("reply ")]
        raise KeyboardInterrupt


def test_ctrl_c_saves_the_partial_reply_marked_interrupted(cli, monkeypatch):
    engine = InterruptedEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    result = cli(["ask", "tell me a long story"])
    assert result.exit_code == 130
    assert result.stdout == "Partial reply \n"
    assert saved() == [("tell me a long story", [("user", "tell me a long story", False), ("assistant", "Partial reply ", True)])]


def test_an_unwritable_data_folder_still_answers_with_a_notice(cli, fake_engine, isolated_home: Path, monkeypatch):
    blocker = isolated_home / "file"
    blocker.write_text("")
    monkeypatch.setenv("GPTCLI_CONFIG_DIR", str(isolated_home))
    monkeypatch.setenv("GPTCLI_HOME", str(blocker / "data"))
    result = cli(["ask", "hi"])
    assert result.exit_code == 0
    assert result.stdout == "Hello from the fake engine.\n"
    assert " ".join(result.stderr.split()).startswith("history not saved: cannot create the history folder")


def test_a_non_database_history_file_is_an_error_naming_it(cli, fake_engine):
    path = default_store_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("my precious notes\n")
    result = cli(["ask", "hi"])
    assert result.exit_code == 1
    assert str(path) in " ".join(result.stderr.split()) and "not a SQLite database" in result.stderr
    assert result.stderr.startswith("error: ")
    assert fake_engine.calls == []  # failed before generating
    assert path.read_text() == "my precious notes\n"
    assert cli(["ask", "hi", "--no-history"]).exit_code == 0  # the way out the message names
    assert cli(["history", "list"]).exit_code == 1


# ---------------------------------------------------------------- continue


def test_continue_puts_the_latest_session_before_the_new_prompt(cli, fake_engine):
    fake_engine.replies = ["Paris.", "Rome.", "Berlin."]
    cli(["ask", "Capital of France?"])
    result = cli(["ask", "-c", "And Italy?"])
    assert result.exit_code == 0, result.stderr
    sent = fake_engine.calls[1]
    assert [(m["role"], m["content"]) for m in sent[1:]] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris."),
        ("user", "And Italy?"),
    ]
    assert sent[0]["role"] == "system"
    cli(["ask", "--continue", "And Germany?"])
    assert len(fake_engine.calls[2]) == 6
    (title, messages), = saved()  # still one session
    assert title == "Capital of France?"
    assert [c for _, c, _ in messages] == ["Capital of France?", "Paris.", "And Italy?", "Rome.", "And Germany?", "Berlin."]


def test_session_option_continues_a_chosen_session_by_title_or_id(cli, fake_engine):
    fake_engine.replies = ["one", "two", "three", "four"]
    cli(["ask", "first topic"])
    cli(["ask", "second topic"])
    first_id = ids()[1]
    assert cli(["history", "rename", first_id, "Topic A"]).exit_code == 0
    assert cli(["ask", "-s", "Topic A", "more on A"]).exit_code == 0
    assert [m["content"] for m in fake_engine.calls[2][1:]] == ["first topic", "one", "more on A"]
    assert cli(["ask", "--session", first_id[:11], "even more"]).exit_code == 0
    assert [m["content"] for m in fake_engine.calls[3][1:]][:2] == ["first topic", "one"]
    by_title = dict(saved())
    assert len(by_title["Topic A"]) == 6 and len(by_title["second topic"]) == 2


def test_continue_keeps_the_sessions_system_prompt(cli, fake_engine):
    cli(["draft", "a note"], stdin="- lunch friday\n")
    cli(["ask", "-c", "make it shorter"])
    system = fake_engine.calls[1][0]
    assert system["role"] == "system" and "writer" in system["content"]


def test_unknown_session_is_a_clear_error(cli, fake_engine):
    cli(["ask", "hello"])
    result = cli(["ask", "-s", "no-such-thing", "hi"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no session 'no-such-thing'")
    assert len(fake_engine.calls) == 1


def test_continue_and_session_together_is_a_usage_error(cli, fake_engine):
    result = cli(["ask", "-c", "-s", "x", "hi"])
    assert result.exit_code == 2 and "either --continue or --session" in result.stderr


def test_continue_with_an_empty_history_starts_a_new_session(cli, fake_engine):
    result = cli(["ask", "-c", "hello"])
    assert result.exit_code == 0
    assert "no saved conversation to continue" in result.stderr
    assert len(saved()) == 1


def test_continue_without_saving_reads_but_does_not_append(cli, fake_engine):
    cli(["ask", "remember 42"])
    result = cli(["ask", "-c", "what number?", "--no-history"])
    assert result.exit_code == 0
    assert fake_engine.calls[1][1]["content"] == "remember 42"
    (_, messages), = saved()
    assert len(messages) == 2


def test_continue_drops_the_oldest_turns_when_the_context_is_full(cli, fake_engine):
    fake_engine.context_size = 300
    fake_engine.replies = [" ".join(f"word{i}" for i in range(40))]  # a loop would be cut short
    for n in range(6):
        args = ["ask", f"question {n} " + "filler " * 30, "-n", "32"]
        assert cli(args if n == 0 else [*args[:1], "-c", *args[1:]]).exit_code == 0
    sent = fake_engine.calls[-1]
    assert fake_engine.count_tokens(sent) <= 300
    assert "question 0" not in json.dumps(sent) and "question 5" in sent[-1]["content"]
    (_, messages), = saved()
    assert len(messages) == 12  # the store keeps every turn


# ---------------------------------------------------------------- history commands


@pytest.fixture
def three_sessions(cli, fake_engine) -> list[str]:
    fake_engine.replies = ["Use **docker compose up**.", "Croissants and coffee.", "A quokka smiles."]
    for prompt in ("How do I start docker compose?", "Breakfast in Paris?", "Tell me about quokkas"):
        assert cli(["ask", prompt]).exit_code == 0
    return ids()  # newest first


def test_history_list_plain_and_json(cli, three_sessions):
    result = cli(["history", "list"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == three_sessions
    assert lines[0].endswith("Tell me about quokkas") and "1 turn" in lines[0] and "fake" in lines[0]
    assert len(cli(["history", "list", "--limit", "2"]).stdout.splitlines()) == 2
    data = json.loads(cli(["history", "list", "--json", "-n", "5"]).stdout)
    assert [d["id"] for d in data] == three_sessions
    assert set(data[0]) >= {"id", "title", "created", "updated", "model", "template", "turns"}


def test_history_list_on_a_terminal_is_a_table(cli, three_sessions):
    screen = terminal_screen(cli(["history", "list"], tty=True).stdout)
    assert "TITLE" in screen and "Breakfast in Paris?" in screen and three_sessions[0] in screen


def test_history_list_aligns_turns_and_shows_titles_as_written(cli, three_sessions):
    """Titles are the user's text (never Rich markup); turn counts line up on a pipe and a terminal."""
    assert cli(["history", "rename", three_sessions[0], "[bold]List<T>[/] notes"]).exit_code == 0
    for _ in range(9):  # ten turns in the newest session
        assert cli(["ask", "-c", "and then?"]).exit_code == 0
    lines = cli(["history", "list"]).stdout.splitlines()
    assert lines[0].endswith("[bold]List<T>[/] notes") and " 10 turns  fake " in lines[0]
    assert " 1 turn    fake " in lines[1]
    assert len({line.index(" fake ") for line in lines}) == 1  # the columns line up
    screen = terminal_screen(cli(["history", "list"], tty=True).stdout)
    assert "[bold]List<T>[/] notes" in screen and "10 turns" in screen


def test_history_list_when_empty(cli):
    result = cli(["history", "list"])
    assert result.exit_code == 0 and result.stdout == "" and "no saved conversations" in result.stderr
    assert cli(["history", "list", "--json"]).stdout == "[]\n"


def test_history_show_plain_json_and_markdown_on_a_terminal(cli, three_sessions):
    first = three_sessions[-1]
    plain = cli(["history", "show", first])
    assert plain.exit_code == 0
    assert plain.stdout.startswith("# How do I start docker compose?")
    assert "## You\n\nHow do I start docker compose?" in plain.stdout and "**docker compose up**" in plain.stdout
    doc = json.loads(cli(["history", "show", first, "--json"]).stdout)
    assert doc["session"]["id"] == first and doc["messages"][1]["content"] == "Use **docker compose up**."
    screen = terminal_screen(cli(["history", "show", first], tty=True).stdout)
    assert "docker compose up" in screen and "**docker" not in screen  # rendered Markdown


def test_history_show_by_title_and_unknown(cli, three_sessions):
    assert cli(["history", "show", "Breakfast in Paris?"]).stdout.startswith("# Breakfast in Paris?")
    missing = cli(["history", "show", "zzzz-nothing"])
    assert missing.exit_code == 1 and missing.stderr.startswith("error: no session")


def test_history_search(cli, three_sessions):
    result = cli(["history", "search", "quokka*"])
    assert result.exit_code == 0
    (line,) = result.stdout.splitlines()  # one line per conversation, as --help says
    assert line.startswith(three_sessions[0]) and "Tell me about quokkas" in line
    assert "quokka" in line.split(": ", 1)[1].lower()  # the snippet, on the same line ...
    assert "**" not in line  # ... without Markdown markers on a pipe
    data = json.loads(cli(["history", "search", "docker", "--json"]).stdout)
    assert [d["session_id"] for d in data] == [three_sessions[-1]]
    assert "**docker**" in data[0]["snippet"].lower()
    none = cli(["history", "search", "submarine"])
    assert none.exit_code == 1 and none.stdout == "" and "nothing in the history matches" in none.stderr
    screen = terminal_screen(cli(["history", "search", "croissants"], tty=True).stdout)
    assert "Croissants and coffee" in screen and "**" not in screen


def test_history_export_formats_to_stdout_and_files(cli, three_sessions, tmp_path: Path):
    sid = three_sessions[0]
    md = cli(["history", "export", sid])
    assert md.exit_code == 0 and md.stdout.startswith("# Tell me about quokkas")
    out = tmp_path / "chat.json"
    result = cli(["history", "export", sid, "--format", "json", "-o", str(out)])
    assert result.exit_code == 0 and result.stdout == ""
    doc = json.loads(out.read_text())
    assert doc["session"]["id"] == sid and [m["role"] for m in doc["messages"]] == ["user", "assistant"]
    out_md = tmp_path / "chat.md"
    cli(["history", "export", sid, "--format", "md", "-o", str(out_md)])
    assert out_md.read_text() == md.stdout
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    bad = cli(["history", "export", sid, "--format", "pdf"])
    assert bad.exit_code == 2 and "md or json" in bad.stderr


def test_history_rm_asks_first(cli, three_sessions):
    sid = three_sessions[0]
    refused = cli(["history", "rm", sid], stdin="n\n")
    assert refused.exit_code == 1 and "Delete 'Tell me about quokkas'" in refused.stderr
    no_answer = cli(["history", "rm", sid], stdin="")
    assert no_answer.exit_code == 1
    assert ids() == three_sessions
    confirmed = cli(["history", "rm", sid], stdin="y\n")
    assert confirmed.exit_code == 0 and ids() == three_sessions[1:]
    assert cli(["history", "rm", three_sessions[1], "--yes"]).exit_code == 0
    assert ids() == three_sessions[2:]
    assert cli(["history", "search", "quokka"]).exit_code == 1  # its messages went too


def test_history_rename(cli, three_sessions):
    result = cli(["history", "rename", three_sessions[0], "Marsupials"])
    assert result.exit_code == 0
    assert cli(["history", "list"]).stdout.splitlines()[0].endswith("Marsupials")
    assert cli(["history", "show", "Marsupials", "--json"]).exit_code == 0


def test_history_help_has_a_summary_and_an_example(run_gptcli):
    for sub in ("list", "show", "search", "export", "rm", "rename", "path", None):
        proc = run_gptcli("history", *([sub] if sub else []), "--help")
        assert proc.returncode == 0, proc.stderr
        assert "Example: " in proc.stdout and "gptcli history" in proc.stdout
    assert "--continue" in run_gptcli("draft", "--help").stdout


def test_saved_rows_are_plain_sqlite_anyone_can_read(cli, fake_engine):
    cli(["ask", "portable?"])
    rows = sqlite3.connect(default_store_path()).execute("SELECT role, content FROM messages ORDER BY id").fetchall()
    assert rows == [("user", "portable?"), ("assistant", "Hello from the fake engine.")]


def test_history_rm_leaves_no_file_derived_from_the_conversation(run_gptcli, tiny_model, isolated_home):
    # a chat on a local model saves its KV state (kv/) and holds a lock (locks/) named by the session
    env = {"GPTCLI_MODEL": str(tiny_model)}
    proc = run_gptcli("chat", "-n", "4", input="hello\n", env=env)
    assert proc.returncode == 0, proc.stderr
    listing = run_gptcli("history", "list", "--json")
    session = json.loads(listing.stdout)[0]["id"]
    derived = lambda: [p for p in isolated_home.rglob("*") if p.is_file() and session in p.name]  # noqa: E731
    assert any(p.suffix == ".kv" for p in derived())  # what `chat -c` would restore
    proc = run_gptcli("history", "rm", session, "--yes")
    assert proc.returncode == 0, proc.stderr
    assert derived() == []


def test_four_characters_of_an_id_tell_sessions_made_together_apart(cli, fake_engine):
    from gptcli.store import new_session_id

    now = 1_800_000_000.0
    prefixes = {new_session_id(now)[:4] for _ in range(200)}  # all in the same second
    assert len(prefixes) > 190
    for prompt in ("first question", "second question", "third question"):
        assert cli(["ask", prompt]).exit_code == 0
    sessions = json.loads(cli(["history", "list", "--json"]).stdout)
    for session in sessions:
        shown = cli(["history", "show", session["id"][:4]])
        assert shown.exit_code == 0, shown.stderr
        assert shown.stdout.startswith(f"# {session['title']}")
