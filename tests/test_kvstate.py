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
        prompt = resumed._format(follow_up)
        reused = resumed._prepare(prompt)
        assert reused >= len(tokens) - 8  # only the new turn is evaluated
        warm = last_logits(resumed)
        fresh = new_engine()
        try:
            assert fresh._prepare(prompt) == 0
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
