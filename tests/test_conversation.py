"""Fitting a chat into the context window: the overflow policies on a fake engine with a tiny window."""

from __future__ import annotations

import pytest

from gptcli.conversation import (
    SUMMARY_HEADING,
    ContextFullError,
    Conversation,
    reply_reserve,
    turns_from_messages,
)
from gptcli.errors import ContextOverflowError
from tests.fakes import FakeEngine

TEN_WORDS = "one two three four five six seven eight nine ten"


def chat_with(turns: int, system: str | None = "Be brief.") -> Conversation:
    conv = Conversation(system=system)
    for i in range(turns):
        conv.add_turn(f"question {i} {TEN_WORDS}", f"answer {i} {TEN_WORDS}")
    return conv


def tiny_engine(context: int = 120) -> FakeEngine:
    # fake counting: words + 4 per message; a turn is 2 x (11 + 4) = 30 tokens
    return FakeEngine(context_size=context)


def test_messages_of_the_next_turn_start_with_those_of_the_last():
    conv = chat_with(2)
    before = conv.messages()
    conv.add_turn("another", "reply")
    assert conv.messages()[: len(before)] == before  # llama.cpp reuses this prefix from its cache


def test_a_fitting_request_is_sent_as_it_is():
    engine = tiny_engine(1000)
    conv = chat_with(3)
    fitted = conv.fit(engine, "next question", policy="stop", max_tokens=100)
    assert fitted.notice is None
    assert fitted.messages == conv.messages("next question")
    assert fitted.prompt_tokens == engine.count_tokens(fitted.messages)


def test_reply_reserve_is_the_reply_limit_but_at_most_a_quarter_of_the_window():
    assert reply_reserve(2048, 100) == 100
    assert reply_reserve(2048, 1500) == 512
    assert reply_reserve(2048, None) == 512


def test_drop_hides_the_oldest_turns_keeps_the_system_prompt_and_says_so():
    engine = tiny_engine(120)  # limit 120 - 25 = 95 tokens for the request
    conv = chat_with(4)
    fitted = conv.fit(engine, "new question", policy="drop", max_tokens=25)
    assert fitted.notice and "left what the model sees" in fitted.notice and "history keeps" in fitted.notice
    assert fitted.messages[0] == {"role": "system", "content": "Be brief."}
    assert fitted.messages[-1] == {"role": "user", "content": "new question"}
    assert engine.count_tokens(fitted.messages) <= 95
    seen = [m["content"] for m in fitted.messages]
    assert not any(text.startswith("question 0") for text in seen)  # the oldest went
    assert any(text.startswith("question 3") for text in seen)  # the newest stayed
    assert len(conv.turns) == 4 and conv.hidden >= 1  # nothing is lost from the conversation itself


def test_after_making_room_the_next_turn_fits_without_touching_history_again():
    engine = tiny_engine(200)
    conv = chat_with(6)
    first = conv.fit(engine, "q", policy="drop", max_tokens=20)
    assert first.notice
    conv.add_turn("q", "short answer")
    second = conv.fit(engine, "q2", policy="drop", max_tokens=20)
    assert second.notice is None
    assert second.messages[: len(first.messages)] == first.messages  # the cached prefix stays valid


def test_summarize_replaces_the_oldest_turns_with_a_note_the_model_sees():
    engine = tiny_engine(160)
    conv = chat_with(5)
    asked: list[list[dict]] = []

    def summarize(request, sampling):
        asked.append(list(request))
        return "The user asked numbered questions."

    fitted = conv.fit(engine, "new question", policy="summarize", max_tokens=30, summarize=summarize)
    assert len(asked) == 1
    transcript = asked[0][-1]["content"]
    assert "question 0" in transcript and "answer 0" in transcript  # the oldest turn was condensed
    assert "question 4" not in transcript  # the newest was not
    system = fitted.messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.")  # the system prompt always stays
    assert SUMMARY_HEADING in system["content"] and "numbered questions" in system["content"]
    assert fitted.notice and "condensed" in fitted.notice
    assert engine.count_tokens(fitted.messages) <= 160 - 30
    assert len(conv.turns) == 5 and conv.hidden >= 1


def test_a_second_summary_folds_in_the_first():
    engine = tiny_engine(160)
    conv = chat_with(5)
    requests: list[str] = []

    def summarize(request, sampling):
        requests.append(request[-1]["content"])
        return f"note {len(requests)}"

    conv.fit(engine, "q", policy="summarize", max_tokens=30, summarize=summarize)
    for i in range(4):
        conv.add_turn(f"more {i} {TEN_WORDS}", f"reply {i} {TEN_WORDS}")
    conv.fit(engine, "q", policy="summarize", max_tokens=30, summarize=summarize)
    assert len(requests) == 2
    assert "Earlier note: note 1" in requests[1]
    assert "note 2" in conv.messages()[0]["content"] and "note 1" not in conv.messages()[0]["content"]


def test_an_empty_summary_falls_back_to_dropping_and_says_why():
    engine = tiny_engine(120)
    conv = chat_with(4)
    fitted = conv.fit(engine, "q", policy="summarize", max_tokens=25, summarize=lambda request, sampling: "  ")
    assert fitted.notice and "could not summarize" in fitted.notice and "left what the model sees" in fitted.notice
    assert conv.summary is None
    assert engine.count_tokens(fitted.messages) <= 95


def test_stop_refuses_and_says_how_to_go_on():
    engine = tiny_engine(120)
    conv = chat_with(4)
    with pytest.raises(ContextFullError) as err:
        conv.fit(engine, "q", policy="stop", max_tokens=25)
    message = str(err.value)
    assert "/new" in message and "/set overflow" in message
    assert conv.hidden == 0 and len(conv.turns) == 4


@pytest.mark.parametrize("policy", ["summarize", "drop", "stop"])
def test_a_single_message_larger_than_the_window_is_a_clear_error(policy):
    engine = tiny_engine(120)
    conv = chat_with(1)
    huge = " ".join(["word"] * 200)
    with pytest.raises(ContextOverflowError) as err:
        conv.fit(engine, huge, policy=policy, max_tokens=25, summarize=lambda r, s: "note")
    assert "this message takes" in str(err.value) and "--ctx" in str(err.value)
    assert conv.hidden == 0 and conv.summary is None and len(conv.turns) == 1


def test_budget_splits_system_summary_history_and_room_left():
    engine = tiny_engine(1000)
    conv = chat_with(2, system="You are terse and exact.")
    budget = conv.budget(engine, max_tokens=100)
    assert budget.system == 5 + 4
    assert budget.summary == 0
    assert budget.history == engine.count_tokens(conv.messages()) - budget.system
    assert budget.used + budget.free == 1000
    assert budget.visible_turns == 2 and budget.hidden_turns == 0
    text = budget.describe(100)
    assert f"context {budget.used}/1000" in text and f"{budget.free} left: the next reply may use 100 (capped at 100" in text
    assert budget.describe(5000).endswith(f"{budget.free} left: the next reply may use {budget.free}")


def test_budget_counts_the_summary_and_hidden_turns():
    engine = tiny_engine(1000)
    conv = chat_with(3)
    conv.hidden, conv.summary = 2, "a short note of four"
    budget = conv.budget(engine)
    assert budget.summary > 0 and budget.hidden_turns == 2 and budget.visible_turns == 1
    assert "2 older turns out of view" in budget.describe(100)


def test_undo_past_the_hidden_turns_clears_the_summary():
    conv = chat_with(2)
    conv.hidden, conv.summary = 2, "note"
    conv.pop_turn()
    assert conv.hidden == 1 and conv.summary == "note"
    conv.pop_turn()
    assert conv.hidden == 0 and conv.summary is None
    assert conv.pop_turn() is None


def test_turns_are_rebuilt_from_stored_rows():
    system, turns = turns_from_messages(
        [
            ("system", "sys", False),
            ("user", "a", False),
            ("assistant", "b", False),
            ("user", "c", False),
            ("assistant", "d partial", True),
            ("user", "unanswered", False),
        ]
    )
    assert system == "sys"
    assert [(t.user, t.reply, t.interrupted) for t in turns] == [
        ("a", "b", False),
        ("c", "d partial", True),
        ("unanswered", "", False),
    ]
