"""`gptcli chat` driven by piped lines (one turn per line) with the fake engine and the real history file."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Sequence

import pytest

from gptcli.config import load_settings
from gptcli.engines import Chunk, Message, Sampling, Usage
from gptcli.errors import EngineError
from gptcli.flow import OutputMode
from gptcli.render import Env
from gptcli.repl import ChatSession
from gptcli.store import ConversationStore
from tests.fakes import FakeEngine


def stored(session_id: str | None = None) -> list[tuple[str, str, bool]]:
    """(role, content, interrupted) of a stored session (the latest by default)."""
    with ConversationStore.open() as store:
        info = store.find_session(session_id) if session_id else store.latest_session()
        assert info is not None, "nothing was saved"
        return [(m.role, m.content, m.interrupted) for m in store.messages(info.id)]


def sessions() -> list:
    with ConversationStore.open() as store:
        return store.list_sessions()


def test_each_piped_line_is_a_turn_answered_in_plain_text(cli, fake_engine):
    fake_engine.replies = ["first reply", "second reply"]
    result = cli(["chat"], stdin="hello\n\nand then?\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "first reply\nsecond reply\n"
    assert fake_engine.calls[1][-3:] == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "first reply"},
        {"role": "user", "content": "and then?"},
    ]
    assert stored() == [
        ("user", "hello", False),
        ("assistant", "first reply", False),
        ("user", "and then?", False),
        ("assistant", "second reply", False),
    ]


def test_plain_output_even_when_stdout_is_a_terminal(cli, fake_engine):
    fake_engine.replies = ["**bold** words"]
    result = cli(["chat"], stdin="hi\n", tty=True)
    assert result.stdout == "**bold** words\n"


def test_continue_resumes_the_latest_chat_and_appends_to_it(cli, fake_engine):
    fake_engine.replies = ["A", "B"]
    assert cli(["chat"], stdin="my name is Ada\n").exit_code == 0
    result = cli(["chat", "-c"], stdin="what is my name?\n")
    assert result.exit_code == 0, result.stderr
    assert fake_engine.calls[-1][-3:] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "what is my name?"},
    ]
    assert len(sessions()) == 1 and [r[1] for r in stored()] == ["my name is Ada", "A", "what is my name?", "B"]
    assert "resumed" in result.stderr


def test_save_names_a_chat_and_session_resumes_it_by_name(cli, fake_engine):
    cli(["chat", "--commands"], stdin="about the garden\n/save garden\n")
    cli(["chat"], stdin="something else\n")
    result = cli(["chat", "-s", "garden"], stdin="more please\n")
    assert result.exit_code == 0, result.stderr
    assert fake_engine.calls[-1][0] == {"role": "user", "content": "about the garden"}
    assert [r[1] for r in stored("garden")][-2:] == ["more please", "Hello from the fake engine."]


def test_save_refuses_a_name_another_conversation_has(cli, fake_engine):
    cli(["chat", "--commands"], stdin="about the garden\n/save garden\n")
    result = cli(["chat", "--commands"], stdin="about the kitchen\n/save garden\n/save kitchen\n")
    assert "error: 'garden' already names another conversation" in result.stderr
    assert stored("garden")[0][1] == "about the garden"
    assert stored("kitchen")[0][1] == "about the kitchen"
    again = cli(["chat", "--commands", "-s", "garden"], stdin="/save garden\n")  # its own name again is fine
    assert again.exit_code == 0 and "error" not in again.stderr


def test_an_unknown_session_is_an_error_before_anything_is_sent(cli, fake_engine):
    result = cli(["chat", "-s", "nosuch"], stdin="hi\n")
    assert result.exit_code == 1 and "error: no session 'nosuch'" in result.stderr
    assert fake_engine.calls == []


def test_continue_and_session_together_is_a_usage_error(cli, fake_engine):
    result = cli(["chat", "-c", "-s", "x"], stdin="hi\n")
    assert result.exit_code == 2 and fake_engine.calls == []


def test_a_draft_can_be_carried_on_in_the_chat(cli, fake_engine):
    fake_engine.replies = ["Dear team, the launch moved.", "Shorter: launch moved."]
    assert cli(["draft", "an email"], stdin="- launch moved to May 3\n").exit_code == 0
    result = cli(["chat", "-c"], stdin="make it shorter\n")
    assert result.exit_code == 0, result.stderr
    last = fake_engine.calls[-1]
    assert last[0]["role"] == "system"  # the draft template's system prompt came along
    assert "launch moved to May 3" in last[1]["content"]
    assert last[2] == {"role": "assistant", "content": "Dear team, the launch moved."}
    assert last[3] == {"role": "user", "content": "make it shorter"}


def test_no_history_saves_nothing(cli, fake_engine):
    assert cli(["chat", "--no-history"], stdin="secret\n").exit_code == 0
    assert sessions() == []


def test_continue_with_no_history_reads_but_does_not_write(cli, fake_engine):
    cli(["chat"], stdin="kept\n")
    result = cli(["chat", "-c", "--no-history"], stdin="not kept\n")
    assert result.exit_code == 0, result.stderr
    assert fake_engine.calls[-1][0] == {"role": "user", "content": "kept"}
    assert [r[1] for r in stored()] == ["kept", "Hello from the fake engine."]


def test_undo_and_retry_change_the_stored_history_too(cli, fake_engine):
    fake_engine.replies = ["r1", "r2", "r3", "r4"]
    result = cli(["chat", "--commands"], stdin="one\ntwo\n/undo\nthree\n/retry\n")
    assert result.exit_code == 0, result.stderr
    assert stored() == [("user", "one", False), ("assistant", "r1", False), ("user", "three", False), ("assistant", "r4", False)]


def test_system_and_template_reach_the_model_and_the_store(cli, fake_engine):
    from gptcli.templates import load_template

    cli(["chat", "-t", "ask"], stdin="hi\n")
    assert fake_engine.calls[-1][0] == {"role": "system", "content": load_template("ask").system.strip()}
    cli(["chat", "--commands", "--system", "Talk like a pirate."], stdin="hi\n/system Talk like a poet.\nagain\n")
    assert fake_engine.calls[-1][0] == {"role": "system", "content": "Talk like a poet."}
    with ConversationStore.open() as store:
        assert store.latest_session().system == "Talk like a poet."


def test_an_unknown_template_fails_before_the_model_loads(cli, monkeypatch):
    def never(settings):
        raise AssertionError("the model should not load")

    monkeypatch.setattr("gptcli.engines.choose.open_engine", never)
    result = cli(["chat", "-t", "nosuch"], stdin="hi\n")
    assert result.exit_code == 1 and "unknown template 'nosuch'" in result.stderr


def test_sessions_lists_and_load_switches(cli, fake_engine):
    cli(["chat", "--commands"], stdin="first chat\n/save alpha\n")
    fake_engine.calls.clear()
    result = cli(["chat", "--commands"], stdin="second chat\n/sessions\n/load alpha\ncontinue alpha\n")
    assert result.exit_code == 0, result.stderr
    listing = result.stdout
    assert "alpha" in listing and "second chat" in listing
    assert fake_engine.calls[-1][0] == {"role": "user", "content": "first chat"}
    assert [r[1] for r in stored("alpha")][-2] == "continue alpha"


class InterruptingEngine(FakeEngine):
    """Streams a few words, then the user presses Ctrl-C."""

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]

        def chunks() -> Iterator[Chunk]:
            yield Chunk("Once upon ", Usage(completion_tokens=2))
            yield Chunk("a time", Usage(completion_tokens=4))
            raise KeyboardInterrupt

        return chunks()


def test_ctrl_c_on_a_piped_chat_keeps_the_partial_reply_and_exits_130(cli, monkeypatch):
    engine = InterruptingEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    result = cli(["chat"], stdin="tell a story\nnever read\n")
    assert result.exit_code == 130
    assert result.stdout == "Once upon a time\n"
    assert stored() == [("user", "tell a story", False), ("assistant", "Once upon a time", True)]
    assert len(engine.calls) == 1


class FailingEngine(FakeEngine):
    """A remote server that goes away mid-reply."""

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]

        def chunks() -> Iterator[Chunk]:
            yield Chunk("The first half", Usage(completion_tokens=3))
            if len(self.calls) == 1:
                raise EngineError("the server closed the connection")

        return chunks()


def test_an_engine_failing_mid_reply_keeps_the_partial_reply_and_the_chat_goes_on(cli, monkeypatch):
    engine = FailingEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    result = cli(["chat"], stdin="one\ntwo\n")
    assert result.exit_code == 0
    assert "error: the server closed the connection" in result.stderr
    assert stored()[:2] == [("user", "one", False), ("assistant", "The first half", True)]
    assert len(engine.calls) == 2 and engine.calls[1][1] == {"role": "assistant", "content": "The first half"}


def test_json_lines_per_turn_for_scripts(cli, fake_engine):
    import json

    result = cli(["chat", "--commands", "--json"], stdin="a\n/tokens\nb\n")
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    assert [e["text"] for e in events if e["type"] == "done"] == ["Hello from the fake engine."] * 2
    info = [e["text"] for e in events if e["type"] == "info"]
    assert len(info) == 1 and info[0].startswith("context ")


def test_resuming_shows_the_last_exchanges(fake_engine):
    settings = load_settings()
    with ConversationStore.open() as store:
        info = store.create_session(model="fake")
        for i in range(5):
            store.add_turn(info.id, f"question {i}", f"answer {i}")
        env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
        chat = ChatSession(settings, env, store=store, mode=OutputMode(plain=True))
        chat.resume(store.find_session(info.id))
    shown = env.stdout.getvalue()
    assert "question 0" not in shown and "answer 1" not in shown
    for i in (2, 3, 4):
        assert f"question {i}" in shown and f"answer {i}" in shown
    assert len(chat.conversation.turns) == 5


@pytest.mark.parametrize("how", ["plain", "styled", "json"])
def test_a_resumed_interrupted_reply_is_shown_marked(fake_engine, how):
    from tests.conftest import TextStream

    with ConversationStore.open() as store:
        info = store.create_session(model="fake")
        store.add_turn(info.id, "tell me **more**", "it began **well", interrupted=True)
        env = Env(stdin=io.StringIO(), stdout=TextStream(tty=how == "styled"), stderr=io.StringIO(), color="always" if how == "styled" else "auto")
        chat = ChatSession(load_settings(), env, store=store, mode=OutputMode(plain=how == "plain", json=how == "json"))
        chat.resume(store.find_session(info.id))
    shown = env.stdout.getvalue()
    if how == "json":
        texts = [json.loads(line)["text"] for line in shown.splitlines()]
        assert texts == ["› tell me **more**", "it began **well (interrupted)"]
    elif how == "plain":
        assert shown == "› tell me **more**\nit began **well (interrupted)\n"
    else:
        assert "\x1b[1m› tell me **more**" in shown and "(interrupted)" in shown  # the user's line bold, as typed
        assert "\x1b[2m(interrupted)" in shown


@pytest.mark.parametrize("policy", ["drop", "summarize"])
def test_overflow_keeps_every_turn_in_the_store(cli, fake_engine, policy):
    fake_engine.context_size = 100
    fake_engine.replies = ["a reply of several words " * 2]
    lines = "".join(f"question {i} " + "word " * 10 + "\n" for i in range(6))
    result = cli(["chat", "--commands"], stdin=f"/set overflow {policy}\n" + lines)
    assert result.exit_code == 0, result.stderr
    assert "context full" in result.stderr
    assert len([r for r in stored() if r[0] == "user"]) == 6


def test_template_variables_fill_its_system_prompt(cli, fake_engine):
    result = cli(["chat", "-t", "translate", "-v", "target=German"], stdin="Good morning\n")
    assert result.exit_code == 0, result.stderr
    assert fake_engine.calls[0][0]["role"] == "system" and "German" in fake_engine.calls[0][0]["content"]


def test_a_template_missing_a_variable_says_which_before_the_model_loads(cli, monkeypatch):
    def never(settings):
        raise AssertionError("the model should not load")

    monkeypatch.setattr("gptcli.engines.choose.open_engine", never)
    result = cli(["chat", "-t", "translate"], stdin="hi\n")
    assert result.exit_code == 2 and "needs target=..." in result.stderr
    result = cli(["chat", "-t", "ask", "-v", "colour=red"], stdin="hi\n")
    assert result.exit_code == 1 and "has no variable 'colour'" in result.stderr
