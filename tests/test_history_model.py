"""End to end with the real model: the installed gptcli saves, continues and shows a conversation."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.model


def test_ask_then_continue_then_show(run_gptcli):
    first = run_gptcli("ask", "My name is Ada. Say hello.", "-n", "12", "--ctx", "512", "--seed", "1")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    second = run_gptcli("ask", "-c", "What is my name?", "-n", "12", "--ctx", "512", "--seed", "1")
    assert second.returncode == 0, second.stderr

    sessions = json.loads(run_gptcli("history", "list", "--json").stdout)
    assert len(sessions) == 1
    (session,) = sessions
    assert session["turns"] == 2 and session["title"] == "My name is Ada. Say hello."
    assert session["model"] and session["template"] == "ask"

    shown = json.loads(run_gptcli("history", "show", session["id"], "--json").stdout)
    messages = shown["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"].strip() == first.stdout.strip()  # what was printed is what was kept
    assert messages[3]["content"].strip() == second.stdout.strip()
    assert 0 < messages[3]["completion_tokens"] <= 12
    assert messages[3]["prompt_tokens"] > messages[1]["prompt_tokens"]  # the first exchange was sent again

    found = run_gptcli("history", "search", "Ada")
    assert found.returncode == 0 and found.stdout.startswith(session["id"])
