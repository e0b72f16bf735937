"""The llama.cpp engine itself: KV-cache reuse, interruption, stop strings, UTF-8, overflow."""

from __future__ import annotations

import pytest

from gptcli.engines import Sampling
from gptcli.engines.local import LocalEngine
from gptcli.engines.reply import StopFilter
from gptcli.errors import ContextOverflowError
from gptcli.models import embedded_model_path
from tests.fakes import collect

GREEDY = Sampling(temperature=0, max_tokens=24, repeat_penalty=1.0)



@pytest.fixture(scope="module")
def engine():
    e = LocalEngine(embedded_model_path(), ctx=1024)
    yield e
    e.close()


def last_logits(engine: LocalEngine):
    import numpy as np

    return np.array(engine.context.logits(-1))


def assert_same_prediction(a, b):
    """Batched and incremental evaluation differ in float rounding only: same distribution."""
    import numpy as np

    assert np.corrcoef(a, b)[0, 1] > 0.999
    assert int(np.argmax(a)) in set(np.argsort(b)[-5:].tolist())


@pytest.mark.model
def test_second_turn_reuses_the_cached_prefix_and_predicts_the_same(engine):
    turn1 = [{"role": "user", "content": "Name a colour."}]
    reply1, usage1 = collect(engine.stream(turn1, GREEDY))
    turn2 = turn1 + [{"role": "assistant", "content": reply1}, {"role": "user", "content": "Name an animal."}]
    tokens = engine.format(turn2)
    reused = engine.prefill(tokens)
    assert reused >= usage1.prompt_tokens - 1
    warm = last_logits(engine)
    fresh = LocalEngine(embedded_model_path(), ctx=1024)
    try:
        assert fresh.prefill(tokens) == 0
        assert_same_prediction(warm, last_logits(fresh))
    finally:
        fresh.close()
    _, usage2 = collect(engine.stream(turn2, GREEDY))
    assert usage2.cached_tokens == len(tokens) - 1


@pytest.mark.model
def test_a_seeded_reply_is_the_same_whether_its_prompt_was_cached_or_not(engine):
    # a prompt of 64+ tokens takes another attention kernel in one batch than its last token alone
    # (what a cached prompt re-evaluates): the last token is always evaluated alone
    text = "Summarise: " + "The wiki moved to a new server last month, and pages load faster now. " * 8
    messages = [{"role": "user", "content": text}]
    seeded = Sampling(temperature=0.8, max_tokens=24, seed=5)
    engine.forget(0)
    fresh, usage = collect(engine.stream(messages, seeded))
    cached, usage2 = collect(engine.stream(messages, seeded))
    assert usage.cached_tokens == 0 and usage2.cached_tokens == usage.prompt_tokens - 1 >= 64
    assert cached == fresh


@pytest.mark.model
def test_interrupted_reply_leaves_the_engine_usable(engine):
    messages = [{"role": "user", "content": "Count from one to fifty in words."}]
    expected, _ = collect(engine.stream(messages, GREEDY))
    stream = engine.stream(messages, Sampling(temperature=0, max_tokens=200, repeat_penalty=1.0))
    next(stream)
    next(stream)
    stream.close()  # what Ctrl-C does through render_stream
    again, usage = collect(engine.stream(messages, GREEDY))
    assert again == expected
    assert usage.cached_tokens == usage.prompt_tokens - 1


@pytest.mark.model
def test_max_tokens_and_finish_reason(engine):
    text, usage = collect(engine.stream([{"role": "user", "content": "Tell a long story."}], Sampling(max_tokens=5, seed=1)))
    assert usage.completion_tokens == 5 and usage.finish_reason == "length"
    assert text


@pytest.mark.model
def test_a_prompt_larger_than_the_window_is_a_clear_error():
    small = LocalEngine(embedded_model_path(), ctx=256)
    try:
        with pytest.raises(ContextOverflowError, match="context window holds 256"):
            small.stream([{"role": "user", "content": "word " * 400}], GREEDY)
    finally:
        small.close()


@pytest.mark.model
def test_raw_completion_has_no_chat_template(engine):
    text, usage = collect(engine.complete("The capital of France is", GREEDY))
    assert text.strip()
    assert usage.prompt_tokens <= 8  # no system prompt or chat markup was added


def test_stop_filter_cuts_at_a_stop_string_split_across_chunks():
    f = StopFilter(["</end>"])
    out = f.feed("Hello wor") + f.feed("ld</e") + f.feed("nd> ignored")
    assert out == "Hello world" and f.hit
    assert f.flush("") == ""


def test_stop_filter_passes_text_without_stops():
    f = StopFilter(["###"])
    assert f.feed("a#b") + f.feed("#c") + f.flush("") == "a#b#c"
