"""Saved KV-cache states: a resumed session continues as if re-read; stale or corrupt states are ignored."""

from __future__ import annotations

import stat

import pytest

from gptcli.engines import Sampling
from gptcli.engines.local import LocalEngine
from gptcli.kvstate import KVStateStore
from gptcli.models import embedded_model_path
from tests.test_local_engine import assert_same_prediction, collect, last_logits

pytestmark = pytest.mark.model
GREEDY = Sampling(temperature=0, max_tokens=16, repeat_penalty=1.0)


def a_conversation(engine: LocalEngine, turns: int = 3) -> list[dict]:
    messages: list[dict] = []
    for i in range(turns):
        messages.append({"role": "user", "content": f"Give me fact number {i + 1} about the moon."})
        reply, _ = collect(engine.stream(messages, GREEDY))
        messages.append({"role": "assistant", "content": reply})
    return messages


@pytest.fixture(scope="module")
def session():
    """A three-turn conversation, its state saved as a first process would at exit."""
    engine = LocalEngine(embedded_model_path(), ctx=1024)
    messages = a_conversation(engine)
    tokens, data = engine.export_state()
    engine.close()
    return messages, tokens, data


def new_engine(ctx: int = 1024) -> LocalEngine:
    return LocalEngine(embedded_model_path(), ctx=ctx)


class Saved:
    def __init__(self, key, tokens, data):
        self.key, self.tokens, self.data = key, tokens, data

    def state_key(self):
        return self.key

    def export_state(self):
        return self.tokens, self.data


def test_resumed_state_predicts_like_a_full_reread(session, tmp_path):
    messages, tokens, data = session
    store = KVStateStore(tmp_path / "kv")
    resumed = new_engine()
    try:
        path = store.save("s1", Saved(resumed.state_key(), tokens, data))
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert store.load("s1", resumed) == len(tokens)
        follow_up = messages + [{"role": "user", "content": "And one about the sun?"}]
        prompt = resumed.format(follow_up)
        reused = resumed.prefill(prompt)
        assert reused >= len(tokens) - 8  # only the new turn is evaluated
        warm = last_logits(resumed)
        fresh = new_engine()
        try:
            assert fresh.prefill(prompt) == 0
            assert_same_prediction(warm, last_logits(fresh))
        finally:
            fresh.close()
    finally:
        resumed.close()


def test_corrupt_state_is_ignored_with_a_notice(session, tmp_path):
    _, tokens, data = session
    store = KVStateStore(tmp_path / "kv")
    engine = new_engine()
    try:
        path = store.save("s2", Saved(engine.state_key(), tokens, data))
        blob = bytearray(path.read_bytes())
        blob[-100] ^= 0xFF
        path.write_bytes(bytes(blob))
        notices: list[str] = []
        assert store.load("s2", engine, notices.append) == 0
        assert "corrupt" in notices[0] and not path.exists()
        path.write_bytes(b"garbage")
        assert store.load("s2", engine, notices.append) == 0 and "corrupt" in notices[1]
        text, _ = collect(engine.stream([{"role": "user", "content": "hi"}], GREEDY))
        assert text  # the engine still works
    finally:
        engine.close()


def test_state_from_other_settings_is_ignored(session, tmp_path):
    _, tokens, data = session
    store = KVStateStore(tmp_path / "kv")
    other = new_engine(ctx=2048)
    try:
        key = dict(other.state_key(), n_ctx=1024)
        store.save("s3", Saved(key, tokens, data))
        notices: list[str] = []
        assert store.load("s3", other, notices.append) == 0
        assert "changed" in notices[0]
    finally:
        other.close()


def test_disk_limit_evicts_least_recently_used(session, tmp_path):
    _, tokens, data = session
    store = KVStateStore(tmp_path / "kv", limit_bytes=int(len(data) * 2.5))
    key = {"model": "x"}
    for name in ("a", "b", "c"):
        store.save(name, Saved(key, tokens, data))
    names = sorted(p.stem for p in (tmp_path / "kv").glob("*.kv"))
    assert names == ["b", "c"]
    total = sum(p.stat().st_size for p in (tmp_path / "kv").glob("*.kv"))
    assert total <= store.limit_bytes


# ---------------------------------------------------------------- through the command line

CHAT = ["--temperature", "0", "--repeat-penalty", "1", "-n", "12", "--ctx", "1024", "--stats"]


def kv_files():
    from gptcli.config import data_dir

    return sorted((data_dir() / "kv").glob("*.kv"))


def first_reply_stats(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if "reply tokens" in line)


def test_chat_continue_resumes_from_the_saved_state(run_gptcli):
    """`chat -c` in a new process reads the saved state: the same reply, the history not re-read."""
    first = run_gptcli("chat", *CHAT, input="Name a planet.\nWhy is the sky blue?\nAnd the sea?\n")
    assert first.returncode == 0, first.stderr
    (state,) = kv_files()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.parent.stat().st_mode) == 0o700

    question = "Tell me about the moon.\n"
    warm = run_gptcli("chat", "-c", "--no-history", *CHAT, input=question)
    cold = run_gptcli("chat", "-c", "--no-history", *CHAT, input=question, env={"GPTCLI_KV_CACHE_MB": "0"})
    assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
    assert warm.stdout == cold.stdout and warm.stdout.strip()
    assert "cached" in first_reply_stats(warm.stderr)  # e.g. "140 prompt (128 cached) + ..."
    assert "cached" not in first_reply_stats(cold.stderr)
    assert "ignored" not in warm.stderr

    state.write_bytes(b"GPTCLIKV" + b"\xff" * 64)  # a torn or tampered file
    damaged = run_gptcli("chat", "-c", "--no-history", *CHAT, input=question)
    assert damaged.returncode == 0
    assert "ignored the saved model state of this session (it is corrupt)" in damaged.stderr
    assert damaged.stdout == cold.stdout
    assert "Traceback" not in damaged.stderr


def test_state_of_another_context_size_is_ignored(run_gptcli):
    assert run_gptcli("chat", *CHAT, input="Name a planet.\n").returncode == 0
    assert kv_files()
    other = [*CHAT[:-3], "--ctx", "2048", "--stats"]
    resumed = run_gptcli("chat", "-c", *other, input="And another?\n")
    assert resumed.returncode == 0
    assert "the model or the context settings changed" in resumed.stderr
    assert "cached" not in first_reply_stats(resumed.stderr)


def test_ask_continue_uses_and_refreshes_the_state(run_gptcli):
    assert run_gptcli("chat", *CHAT, input="Name a planet.\n").returncode == 0
    (state,) = kv_files()
    before = state.stat().st_size
    asked = run_gptcli("ask", "-c", *CHAT, "And a moon?")
    assert asked.returncode == 0, asked.stderr
    assert "cached" in first_reply_stats(asked.stderr)
    assert state.stat().st_size > before  # the state now holds the new exchange too


def test_no_state_is_written_with_history_off_or_a_zero_limit(run_gptcli):
    assert run_gptcli("chat", "--no-history", *CHAT, input="Name a planet.\n").returncode == 0
    assert run_gptcli("chat", *CHAT, input="Name a planet.\n", env={"GPTCLI_KV_CACHE_MB": "0"}).returncode == 0
    assert kv_files() == []
