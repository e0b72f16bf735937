"""The repetition guard: a reply that starts repeating itself is stopped, kept up to the loop, and marked."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from gptcli.engines import Chunk, Usage
from gptcli.repetition import guard_stream, loop_start
from gptcli.store import ConversationStore
from tests.fakes import collect

LINE = "Please let me know if you have any questions about the launch."
LOOPING = "Dear team,\n\nThe launch moves to May 3.\n\n" + "\n".join([LINE] * 40)


def scripted(text: str, log: list[str]) -> Iterator[Chunk]:
    """An engine stream in word-sized chunks that records how far it was read and whether it was closed."""
    usage = Usage(prompt_tokens=10)
    try:
        for word in text.split(" "):
            usage.completion_tokens += 1
            log.append(word)
            yield Chunk(word + " ", usage)
        yield Chunk("", usage)
    finally:
        log.append("<closed>")


def test_a_line_written_again_and_again_is_cut_before_its_third_copy_and_the_engine_stops():
    log: list[str] = []
    text, usage = collect(guard_stream(scripted(LOOPING, log)))
    assert usage is not None and usage.finish_reason == "loop"
    assert text.count(LINE) == 2  # a line may come back once (a refrain); the third time is the loop
    assert text.startswith("Dear team,") and text == text.rstrip()
    assert log[-1] == "<closed>"
    assert len(log) < 60  # the engine was not read on to the end (40 lines of 12 words)
    assert usage.completion_tokens < 60


def test_a_phrase_loop_is_cut_at_its_second_copy():
    reply = "The answer is simple: " + "we keep the servers running all night " * 10
    text, usage = collect(guard_stream(scripted(reply, [])))
    assert usage is not None and usage.finish_reason == "loop"
    assert text.rstrip() == "The answer is simple: we keep the servers running all night"


def test_what_was_passed_on_is_the_reply_as_kept_nothing_of_the_loop_shows():
    # every chunk handed to the renderer stays: the guard holds back text that may be a repetition
    seen: list[str] = []
    for chunk in guard_stream(scripted(LOOPING, [])):
        seen.append(chunk.text)
    assert "".join(seen).count(LINE) == 2


@pytest.mark.parametrize(
    "reply",
    [
        "A normal reply. It has sentences. Some are short. Yes. Yes. Yes. Yes.",
        "1. Mix.\n2. Stir.\n3. Bake.\n4. Serve.",
        "Roses are red and the sea is wide.\nI sing all day.\nRoses are red and the sea is wide.\nGood night.",
        "在这里写中文。这是第二句。",
        "Three rows:\n\n```html\n<div class=\"row\">a</div>\n<div class=\"row\">a</div>\n<div class=\"row\">a</div>\n```\n\nDone.",
    ],
)
def test_replies_that_do_not_loop_pass_through_whole(reply):
    log: list[str] = []
    text, usage = collect(guard_stream(scripted(reply, log)))
    assert usage is not None and usage.finish_reason == "stop"
    assert text == reply + " "  # the scripted stream adds a space after each word
    assert log[-1] == "<closed>"


def test_stopping_early_closes_the_engine_stream():
    log: list[str] = []
    guarded = guard_stream(scripted(LOOPING, log))
    next(guarded)
    guarded.close()  # Ctrl-C: render_stream closes what it reads
    assert log[-1] == "<closed>"


def test_ask_stops_a_looping_reply_with_a_notice_and_saves_it_cut(cli, fake_engine, isolated_home):
    fake_engine.replies = [LOOPING]
    result = cli(["ask", "write the email"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(LINE) == 2
    assert "repeating itself" in result.stderr and "--no-loop-guard" in result.stderr
    store = ConversationStore.open()
    session = store.latest_session()
    assert session is not None
    saved = store.messages(session.id)[-1]
    assert saved.role == "assistant" and saved.content.count(LINE) == 2


def test_json_done_event_says_loop(cli, fake_engine):
    fake_engine.replies = [LOOPING]
    result = cli(["draft", "an email", "--json"], stdin="notes")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    done = events[-1]
    assert done["type"] == "done" and done["usage"]["finish_reason"] == "loop"
    assert done["text"] == "".join(e["text"] for e in events if e["type"] == "chunk")
    assert done["text"].count(LINE) == 2


def test_the_guard_can_be_turned_off_by_flag_and_by_config(cli, fake_engine):
    fake_engine.replies = [LOOPING]
    result = cli(["ask", "write it", "--no-loop-guard"])
    assert result.stdout.count(LINE) == 40 and "repeating" not in result.stderr
    assert cli(["config", "set", "loop_guard", "off"]).exit_code == 0
    result = cli(["ask", "write it"])
    assert result.stdout.count(LINE) == 40 and "repeating" not in result.stderr


def test_the_chat_stops_a_looping_reply_and_goes_on(cli, fake_engine):
    fake_engine.replies = [LOOPING, "Fine, thanks."]
    result = cli(["chat"], stdin="write the email\nhow are you?\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count(LINE) == 2 and "Fine, thanks." in result.stdout
    assert "repeating itself" in result.stderr
    history = fake_engine.calls[1]
    assert history[-2]["role"] == "assistant" and history[-2]["content"].count(LINE) == 2


@pytest.mark.model
def test_the_embedded_model_is_stopped_when_it_loops(run_gptcli):
    # at temperature 0 (flash attention on, the default) the 135M model writes the same four-line
    # chorus a third time, with a line glued before it (250 tokens without the guard)
    args = ["ask", "Write a song about the sea with a chorus.", "--temperature", "0", "-n", "450", "--json", "--no-history"]
    guarded = run_gptcli(*args)
    assert guarded.returncode == 0, guarded.stderr
    done = json.loads(guarded.stdout.splitlines()[-1])
    assert done["usage"]["finish_reason"] == "loop"
    assert done["usage"]["completion_tokens"] < 450
    assert "repeating itself" in guarded.stderr
    assert loop_start(done["text"]) is not None  # it did repeat itself (a second copy is allowed) ...
    paragraphs = [p for p in done["text"].split("\n\n") if p.strip()]
    assert max(paragraphs.count(p) for p in paragraphs) <= 2  # ... but no third time


def test_text_held_back_is_not_lost_when_the_engine_fails_mid_reply():
    from gptcli.errors import EngineError

    def failing() -> Iterator[Chunk]:
        usage = Usage()
        for word in ["A", "first", "sentence", "here.", "A", "first"]:  # the second "A first" is held back
            yield Chunk(word + " ", usage)
        raise EngineError("the server went away")

    seen: list[str] = []
    with pytest.raises(EngineError):
        for chunk in guard_stream(failing()):
            seen.append(chunk.text)
    assert "".join(seen) == "A first sentence here. A first "
