"""The chat REPL driven through prompt-toolkit's pipe input with the fake engine: keys and slash commands."""

from __future__ import annotations

import io
import json
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings as hyp_settings, strategies as st
from prompt_toolkit.document import Document
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from gptcli.config import data_dir, load_settings
from gptcli.engines import Chunk, Message, Sampling, Usage
from gptcli.errors import GptcliError, ModelError, UsageError
from gptcli.flow import OutputMode
from gptcli.render import Env
from gptcli.chat.commands import Command, UnknownCommand, parse_command
from gptcli.chat.prompt import ChatCompleter, make_prompt_session
from gptcli.repl import ChatSession, run_interactive
from tests.fakes import FakeEngine

ENTER = "\r"
ALT_ENTER = "\x1b\r"
CTRL_C = "\x03"
CTRL_D = "\x04"


def paste(text: str) -> str:
    return f"\x1b[200~{text}\x1b[201~"


# ---------------------------------------------------------------- parsing


def test_plain_text_and_paths_are_messages_not_commands():
    assert parse_command("hello") is None
    assert parse_command("/usr/bin/env is what?") is None
    assert parse_command("//help is a literal slash") is None
    assert parse_command("") is None


def test_commands_their_arguments_and_aliases():
    assert parse_command("/help") == Command("help")
    assert parse_command("  /system   You are terse.  ") == Command("system", "You are terse.")
    assert parse_command("/quit") == Command("exit")
    assert parse_command("/RETRY") == Command("retry")


@pytest.mark.parametrize(
    "line, key, value",
    [
        ("/set temperature 0.7", "temperature", 0.7),
        ("/set temp=0.2", "temperature", 0.2),
        ("/set top-k 5", "top_k", 5),
        ("/set max_tokens 64", "max_tokens", 64),
        ("/set seed 42", "seed", 42),
        ("/set seed random", "seed", None),
        ("/set overflow DROP", "overflow", "drop"),
    ],
)
def test_set_parses_and_checks_values(line, key, value):
    command = parse_command(line)
    assert command is not None and (command.key, command.value) == (key, value)


@pytest.mark.parametrize(
    "line, says",
    [
        ("/set temperature 9", "must be >= 0 and <= 5"),
        ("/set temperature abc", "must be a number"),
        ("/set temperature nan", "finite"),
        ("/set top_k -1", ">= 0"),
        ("/set overflow sideways", "summarize, drop, stop"),
        ("/set colour red", "cannot change 'colour'"),
        ("/set temperature", "needs a value"),
        ("/undo now", "takes no argument"),
        ("/file", "needs PATH"),
        ("/export", "needs FILE"),
    ],
)
def test_bad_arguments_are_gptcli_usage_errors(line, says):
    with pytest.raises(UsageError) as err:
        parse_command(line)
    assert says in str(err.value)


def test_an_unknown_command_suggests_the_close_one():
    with pytest.raises(UnknownCommand) as err:
        parse_command("/retyr")
    assert "did you mean /retry?" in str(err.value) and "/help" in str(err.value)


@hyp_settings(max_examples=300, deadline=None)
@given(st.text(max_size=40).map(lambda s: "/" + s) | st.text(max_size=40))
def test_parsing_only_ever_raises_gptcli_errors(line):
    try:
        parse_command(line)
    except GptcliError:
        pass


# ---------------------------------------------------------------- driving the REPL


@dataclass
class Session:
    exit_code: int
    stdout: str
    stderr: str
    chat: ChatSession


@pytest.fixture
def repl(fake_engine: FakeEngine):
    """Type ``keys`` into a chat whose prompt reads a pipe; returns what it printed and its state."""

    def drive(*keys: str, settings=None, store=None, stats: bool = False, chat: ChatSession | None = None) -> Session:
        env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
        if chat is None:
            chat = ChatSession(settings or load_settings(), env, store=store, mode=OutputMode(plain=True, stats=stats))
        else:
            chat.env = env
        with create_pipe_input() as pipe:
            session = make_prompt_session(chat, input=pipe, output=DummyOutput())
            pipe.send_text("".join(keys) + CTRL_D)
            code = run_interactive(chat, session)
        return Session(code, env.stdout.getvalue(), env.stderr.getvalue(), chat)

    return drive


def test_enter_sends_and_the_reply_is_printed(repl, fake_engine):
    result = repl("hello there" + ENTER)
    assert result.exit_code == 0
    assert result.stdout == "Hello from the fake engine.\n"
    assert fake_engine.calls == [[{"role": "user", "content": "hello there"}]]


def test_history_is_sent_with_each_new_message(repl, fake_engine):
    fake_engine.replies = ["first answer", "second answer"]
    repl("one" + ENTER, "two" + ENTER)
    assert fake_engine.calls[1] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
    ]


def test_alt_enter_adds_a_line_and_a_paste_arrives_whole(repl, fake_engine):
    repl("line one" + ALT_ENTER + "line two" + ENTER, paste("pasted\nthree\nlines") + ENTER)
    assert [c[-1]["content"] for c in fake_engine.calls] == ["line one\nline two", "pasted\nthree\nlines"]


def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_leaves_with_0(repl, fake_engine):
    result = repl("abandoned words" + CTRL_C + "kept" + ENTER)
    assert result.exit_code == 0
    assert [c[-1]["content"] for c in fake_engine.calls] == ["kept"]


def test_exit_leaves_at_once(repl, fake_engine):
    result = repl("/exit" + ENTER + "never sent" + ENTER)
    assert result.exit_code == 0 and fake_engine.calls == []


def test_retry_regenerates_the_last_reply(repl, fake_engine):
    fake_engine.replies = ["a weak answer", "a better answer"]
    result = repl("question" + ENTER, "/retry" + ENTER)
    assert fake_engine.calls[0] == fake_engine.calls[1] == [{"role": "user", "content": "question"}]
    assert result.stdout.splitlines() == ["a weak answer", "a better answer"]
    assert [(t.user, t.reply) for t in result.chat.conversation.turns] == [("question", "a better answer")]


def test_undo_removes_the_last_exchange_from_what_the_model_sees(repl, fake_engine):
    fake_engine.replies = ["A", "B", "C"]
    result = repl("first" + ENTER, "second" + ENTER, "/undo" + ENTER, "third" + ENTER)
    assert fake_engine.calls[-1] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "third"},
    ]
    assert "removed the last exchange" in result.stderr


def test_retry_and_undo_with_nothing_to_act_on_are_hints(repl, fake_engine):
    result = repl("/retry" + ENTER, "/undo" + ENTER)
    assert "nothing to retry" in result.stderr and "nothing to undo" in result.stderr
    assert "error" not in result.stderr and fake_engine.calls == []


def test_system_sets_shows_and_removes_the_system_prompt(repl, fake_engine):
    result = repl("/system Answer in French." + ENTER, "hi" + ENTER, "/system" + ENTER, "/system off" + ENTER, "again" + ENTER)
    assert fake_engine.calls[0][0] == {"role": "system", "content": "Answer in French."}
    assert "Answer in French." in result.stdout
    assert fake_engine.calls[1][0]["role"] == "user"


def test_template_brings_its_system_prompt(repl, fake_engine):
    from gptcli.templates import load_template

    repl("/template ask" + ENTER, "hi" + ENTER)
    assert fake_engine.calls[0][0] == {"role": "system", "content": load_template("ask").system.strip()}


def test_an_unknown_template_is_an_error_line_and_the_chat_goes_on(repl, fake_engine):
    result = repl("/template nosuch" + ENTER, "hi" + ENTER)
    assert "error: unknown template 'nosuch'" in result.stderr
    assert len(fake_engine.calls) == 1


def test_set_changes_sampling_for_the_next_reply(repl, fake_engine):
    result = repl("/set temperature 0.2" + ENTER, "/set top_k 5" + ENTER, "/set seed 7" + ENTER, "hi" + ENTER, "/set" + ENTER)
    sampling = fake_engine.samplings[0]
    assert (sampling.temperature, sampling.top_k, sampling.seed) == (0.2, 5, 7)
    assert "temperature = 0.2" in result.stdout and "overflow = summarize" in result.stdout


def test_a_bad_set_is_one_error_line_and_the_chat_goes_on(repl, fake_engine):
    result = repl("/set temperature 9" + ENTER, "hi" + ENTER)
    assert result.stderr.count("error:") == 1 and "temperature must be" in result.stderr
    assert fake_engine.samplings[0].temperature == 0.7


def test_unknown_command_is_a_hint_not_an_error(repl, fake_engine):
    result = repl("/frobnicate" + ENTER, "hi" + ENTER)
    assert "unknown command /frobnicate" in result.stderr and "error" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert len(fake_engine.calls) == 1


def test_help_lists_every_command(repl):
    from gptcli.chat.commands import COMMANDS

    result = repl("/help" + ENTER)
    for name in COMMANDS:
        assert f"/{name}" in result.stdout
    assert "Alt-Enter" in result.stdout


def test_edit_without_an_editor_off_a_terminal_is_one_error_line_and_the_chat_goes_on(repl, monkeypatch):
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.delenv("EDITOR", raising=False)
    result = repl("/edit a draft" + ENTER, "hi" + ENTER)
    assert result.stderr.splitlines()[0] == "error: no editor: set $EDITOR (or $VISUAL)"
    assert [t.user for t in result.chat.conversation.turns] == ["hi"]


def test_edit_sends_what_the_editor_saved(repl, monkeypatch, tmp_path):
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf "%s, edited\\n" "$(cat "$1")" > "$1"\n')
    editor.chmod(0o755)
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", str(editor))
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(drafts))
    result = repl("/edit a draft" + ENTER)
    assert [t.user for t in result.chat.conversation.turns] == ["a draft, edited"]
    assert list(drafts.iterdir()) == []  # the draft's file is gone once sent


def test_every_command_help_lists_has_a_handler_and_no_handler_is_unlisted():
    from gptcli.chat.commands import COMMANDS
    from gptcli.chat.handlers import HANDLERS

    assert set(HANDLERS) == set(COMMANDS)


def test_tokens_shows_the_budget(repl, fake_engine):
    fake_engine.context_size = 1000
    result = repl("/system Be brief." + ENTER, "hello" + ENTER, "/tokens" + ENTER)
    line = result.stdout.strip().splitlines()[-1]
    used = fake_engine.count_tokens(result.chat.conversation.messages())
    assert line.startswith(f"context {used}/1000 tokens: system 6 + history")
    assert f"; {1000 - used} left: the next reply may use {1000 - used}" in line


def test_tokens_and_the_stats_line_agree_and_show_the_reply_cap(repl, fake_engine):
    fake_engine.context_size = 1000
    result = repl("/set max_tokens 60" + ENTER, "/stats on" + ENTER, "hello" + ENTER, "/tokens" + ENTER)
    tokens = result.stdout.strip().splitlines()[-1]
    stats = next(line for line in result.stderr.splitlines() if "tok/s" in line)
    used = fake_engine.count_tokens(result.chat.conversation.messages())
    assert tokens.startswith(f"context {used}/1000 tokens") and f"context {used}/1000" in stats
    assert "the next reply may use 60 (capped at 60" in tokens
    assert "(of 60) reply tokens" in stats


def test_stats_toggles_the_status_line(repl, fake_engine):
    result = repl("one" + ENTER, "/stats" + ENTER, "two" + ENTER)
    assert result.stderr.count("tok/s") == 1
    assert "context" in result.stderr.splitlines()[-1]


def test_new_starts_afresh_keeping_the_system_prompt(repl, fake_engine):
    repl("/system S." + ENTER, "one" + ENTER, "/new" + ENTER, "two" + ENTER)
    assert fake_engine.calls[1] == [{"role": "system", "content": "S."}, {"role": "user", "content": "two"}]


def test_overflow_stop_refuses_and_the_chat_goes_on(repl, fake_engine):
    fake_engine.context_size = 60
    fake_engine.replies = ["a reply of six words here"]
    words = "w " * 14
    result = repl("/set overflow stop" + ENTER, words + ENTER, words + ENTER, "/undo" + ENTER, "short" + ENTER)
    assert "error: the conversation no longer fits" in result.stderr and "/new" in result.stderr
    assert len(fake_engine.calls) == 2  # the refused turn never reached the model
    assert fake_engine.calls[1][-1]["content"] == "short"


def test_overflow_summarize_asks_the_model_for_a_note_and_says_so(repl, fake_engine):
    fake_engine.context_size = 120
    fake_engine.replies = [" ".join(f"answer{i}" for i in range(10))]  # "answer answer ..." is a loop, cut short
    long = "word " * 12
    result = repl(*[f"q{i} {long}" + ENTER for i in range(4)])
    summary_requests = [c for c in fake_engine.calls if "Condense this conversation" in c[-1]["content"]]
    assert summary_requests, "the model was never asked to condense"
    assert "condensed" in result.stderr and "history keeps" in result.stderr
    last = fake_engine.calls[-1]
    assert last[0]["role"] == "system" and "Summary of the earlier conversation" in last[0]["content"]
    assert len(result.chat.conversation.turns) == 4  # every turn is still in the conversation


def test_a_message_larger_than_the_window_is_an_error_and_the_chat_goes_on(repl, fake_engine):
    fake_engine.context_size = 100
    result = repl(("word " * 200) + ENTER, "small" + ENTER)
    assert "error: this message takes" in result.stderr
    assert [c[-1]["content"] for c in fake_engine.calls] == ["small"]


class InterruptingEngine(FakeEngine):
    """Streams two words, then the user presses Ctrl-C."""

    def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
        self.calls.append([dict(m) for m in messages])  # type: ignore[misc]

        def chunks() -> Iterator[Chunk]:
            yield Chunk("partial ", Usage(completion_tokens=1))
            yield Chunk("reply", Usage(completion_tokens=2))
            raise KeyboardInterrupt

        return chunks()


def test_ctrl_c_during_a_reply_keeps_the_partial_reply_and_returns_to_the_prompt(repl, monkeypatch):
    engine = InterruptingEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    result = repl("tell me a long story" + ENTER, "next" + ENTER)
    assert result.exit_code == 0
    assert result.stdout.startswith("partial reply\n")
    assert "interrupted" in result.stderr
    first = result.chat.conversation.turns[0]
    assert (first.reply, first.interrupted) == ("partial reply", True)
    assert engine.calls[1][1] == {"role": "assistant", "content": "partial reply"}


def test_model_switches_engine_and_a_failed_switch_keeps_the_current_one(repl, monkeypatch):
    opened: list[str | None] = []
    engines = {None: FakeEngine(model_name="first"), "other.gguf": FakeEngine(model_name="other", replies=["from other"])}

    def open_engine(settings):
        opened.append(settings.model)
        if settings.model == "broken.gguf":
            raise ModelError("cannot load model broken.gguf: bad magic")
        return engines[settings.model]

    monkeypatch.setattr("gptcli.engines.choose.open_engine", open_engine)
    result = repl("/model broken.gguf" + ENTER, "/model" + ENTER, "/model other.gguf" + ENTER, "hi" + ENTER)
    assert "error: cannot load model broken.gguf" in result.stderr
    assert "first" in result.stdout  # /model with no argument names the current one
    assert result.stdout.strip().splitlines()[-1] == "from other"
    assert result.chat.engine.model_name == "other"


def test_export_writes_markdown_and_json(repl, fake_engine, tmp_path):
    md, js = tmp_path / "chat.md", tmp_path / "chat.json"
    repl("/system Be kind." + ENTER, "hello" + ENTER, f"/export {md}" + ENTER, f"/export {js}" + ENTER)
    text = md.read_text()
    assert "## You\n\nhello" in text and "Hello from the fake engine." in text and "Be kind." in text
    data = json.loads(js.read_text())
    assert data["session"]["system"] == "Be kind."
    assert [(m["role"], m["content"], m["interrupted"]) for m in data["messages"]] == [
        ("user", "hello", False),
        ("assistant", "Hello from the fake engine.", False),
    ]


def test_input_history_is_a_private_file_recalled_with_up(repl, fake_engine):
    repl("remember this line" + ENTER)
    path = data_dir() / "input_history"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "remember this line" in path.read_text()
    repl("\x1b[A" + ENTER)  # Up recalls it in a new session, Enter sends it again
    assert fake_engine.calls[-1][-1]["content"] == "remember this line"


def test_no_history_keeps_input_out_of_the_file(repl, fake_engine):
    settings = load_settings().with_flags(history=False)
    repl("secret" + ENTER, settings=settings)
    path = data_dir() / "input_history"
    assert not path.exists() or "secret" not in path.read_text()


# ---------------------------------------------------------------- Tab completion


def completions(text: str, **sources) -> list[str]:
    completer = ChatCompleter(
        sources.get("templates", lambda: ["ask", "draft", "proofread"]),
        sources.get("models", lambda: ["smollm2-135m", "qwen2.5-0.5b"]),
        sources.get("sessions", lambda: ["notes"]),
    )
    return [c.text for c in completer.get_completions(Document(text), None)]


def test_tab_completes_commands_templates_models_and_settings():
    assert completions("/te") == ["/template"]
    assert set(completions("/s")) == {"/system", "/set", "/stats", "/save", "/sessions", "/schema"}
    assert completions("/template pr") == ["proofread"]
    assert completions("/model sm") == ["smollm2-135m"]
    assert completions("/set ov") == ["overflow"]
    assert completions("/set overflow d") == ["drop"]
    assert completions("/load n") == ["notes"]
    assert completions("plain text") == []


def test_model_completion_offers_the_embedded_model_aliases_and_gguf_files_here(fake_engine, tmp_path, monkeypatch):
    from gptcli.models import RegisteredModel, Registry

    Registry(models={"qwen-small": RegisteredModel(name="qwen-small", path="/models/q.gguf", source="local")}).save()
    (tmp_path / "local.gguf").write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    chat = ChatSession(load_settings(), Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO()))
    with create_pipe_input() as pipe:
        session = make_prompt_session(chat, input=pipe, output=DummyOutput())
    offered = [c.text for c in session.completer.get_completions(Document("/model "), None)]
    assert offered == sorted({"smollm2-135m", "qwen-small", str(tmp_path / "local.gguf")})


def test_tab_completes_gguf_paths(tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    (tmp_path / "notes.txt").write_text("x")
    assert completions(f"/model {tmp_path}/") == ["tiny.gguf"]


def test_a_failing_completion_source_offers_nothing_instead_of_crashing():
    def broken():
        raise OSError("unreadable folder")

    assert completions("/template ", templates=broken) == []


def test_the_chat_offers_usable_templates_and_templates_list_shows_the_broken_one_too(repl, cli, fake_engine):
    from gptcli.templates import user_dir

    user_dir().mkdir(parents=True)
    (user_dir() / "greet.toml").write_text('description = "Hello"\nuser = "Hi {input}"\n', encoding="utf-8")
    (user_dir() / "broken.toml").write_text('user = "{input}" {{{', encoding="utf-8")
    chat = ChatSession(load_settings(), Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO()))
    with create_pipe_input() as pipe:
        session = make_prompt_session(chat, input=pipe, output=DummyOutput())
    offered = [c.text for c in session.completer.get_completions(Document("/template "), None)]
    assert "greet" in offered and "ask" in offered and "broken" not in offered
    listed = repl("/template" + ENTER).stdout
    assert "greet" in listed and "broken" not in listed
    table = cli(["templates", "list"])
    assert "greet" in table.stdout and "broken" in table.stdout  # with its error, so the user can fix it


def test_template_takes_variables_in_the_chat(repl, fake_engine):
    result = repl("/template translate" + ENTER, "/template translate target='Brazilian Portuguese'" + ENTER, "hi" + ENTER)
    assert "error: template 'translate' needs target=..." in result.stderr
    assert "Brazilian Portuguese" in fake_engine.calls[0][0]["content"]


# ---------------------------------------------------------------- the daily-driver details


def test_help_fits_a_narrow_window_without_breaking_words():
    from gptcli.chat.commands import COMMANDS, help_text

    for width in (40, 60, 100):
        text = help_text(width)
        assert max(len(line) for line in text.splitlines()) <= width
        joined = " ".join(text.split())
        for spec in COMMANDS.values():
            assert " ".join(spec.help.split()) in joined  # each help text whole, its words unbroken


def test_a_wrapped_line_gets_no_continuation_marker(fake_engine):
    chat = ChatSession(load_settings(), Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO()))
    with create_pipe_input() as pipe:
        session = make_prompt_session(chat, input=pipe, output=DummyOutput())
    assert session.prompt_continuation(2, 1, 0) == "· "  # a new line of the message
    assert session.prompt_continuation(2, 0, 1) == "  "  # a long line wrapped on screen


def test_vi_mode_comes_from_the_settings(fake_engine, monkeypatch):
    from prompt_toolkit.enums import EditingMode

    env = Env(stdin=io.StringIO(), stdout=io.StringIO(), stderr=io.StringIO())
    monkeypatch.setenv("GPTCLI_VI_MODE", "true")
    chat = ChatSession(load_settings(), env)
    with create_pipe_input() as pipe:
        assert make_prompt_session(chat, input=pipe, output=DummyOutput()).editing_mode == EditingMode.VI
    monkeypatch.delenv("GPTCLI_VI_MODE")
    chat = ChatSession(load_settings(), env)
    with create_pipe_input() as pipe:
        assert make_prompt_session(chat, input=pipe, output=DummyOutput()).editing_mode == EditingMode.EMACS


def test_the_toolbar_gauge_follows_the_conversation(repl, fake_engine):
    fake_engine.context_size = 4096
    result = repl("/set max_tokens 60" + ENTER, "hello" + ENTER)
    gauge = result.chat.gauge()
    used = fake_engine.count_tokens(result.chat.conversation.messages())
    assert f"fake · context {used}/4k · reply ≤ 60" in gauge


def test_tab_completes_a_path_after_at_in_a_message(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert completions(f"summarize @{tmp_path}/") == ["notes.txt"]
    assert completions(f"/file {tmp_path}/") == ["notes.txt"]
    assert completions("/stats o") == ["off", "on"]


def test_ctrl_c_before_the_first_token_saves_nothing_and_says_cancelled(repl, monkeypatch):
    class CancelledEngine(FakeEngine):
        def stream(self, messages: Sequence[Message], sampling: Sampling) -> Iterator[Chunk]:
            self.calls.append([dict(m) for m in messages])  # type: ignore[misc]

            def chunks() -> Iterator[Chunk]:
                raise KeyboardInterrupt
                yield  # pragma: no cover

            return chunks()

    engine = CancelledEngine()
    monkeypatch.setattr("gptcli.engines.choose.open_engine", lambda settings: engine)
    result = repl("never mind" + ENTER)
    assert "cancelled" in result.stderr and "partial reply" not in result.stderr
    assert result.chat.conversation.turns == []
