"""Several replies at once from one model (engines/parallel.py), with the real model through llama.cpp."""

from __future__ import annotations

import threading

import pytest

from gptcli.engines import Sampling
from gptcli.engines.local import LocalEngine
from gptcli.engines.parallel import ParallelEngine, auto_parallel
from gptcli.errors import ContextOverflowError, EngineError
from gptcli.models import embedded_model_path

GREEDY = Sampling(temperature=0, max_tokens=32, repeat_penalty=1.0)
QUESTIONS = ["Name three colours.", "What is the capital of France?", "Write a haiku about rain.", "Count from one to five."]


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def text_of(chunks) -> str:
    return "".join(chunk.text for chunk in chunks)


@pytest.fixture(scope="module")
def engine():
    e = LocalEngine(embedded_model_path(), ctx=1024)
    yield e
    e.close()


def run_threads(batched: ParallelEngine, jobs: dict[int, str], sampling: Sampling = GREEDY) -> dict[int, str]:
    """Each question from its own thread, as translate's workers do; this thread drives the batches."""
    replies: dict[int, str] = {}
    errors: list[BaseException] = []

    def worker(key: int, question: str) -> None:
        try:
            replies[key] = text_of(batched.stream(ask(question), sampling))
        except BaseException as exc:
            errors.append(exc)
        finally:
            batched.wake()

    threads = [threading.Thread(target=worker, args=item, daemon=True) for item in jobs.items()]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        batched.pump(0.05)
    if errors:
        raise errors[0]
    return replies


@pytest.mark.model
def test_replies_decoded_together_are_the_replies_decoded_one_by_one(engine):
    alone = {i: text_of(engine.stream(ask(q), GREEDY)) for i, q in enumerate(QUESTIONS)}
    with engine.parallel(4) as batched:
        together = run_threads(batched, dict(enumerate(QUESTIONS)))
        again = run_threads(batched, dict(enumerate(QUESTIONS)))  # sequences reused, prompts from their caches
    assert len(set(alone.values())) == 4, "four different questions, four different replies"
    for i in range(4):
        # batched float sums may round differently, so a near-tie late in a reply may go the other
        # way; a reply that went to another sequence, or read another's cache, differs at once
        assert together[i][:12] == alone[i][:12], (i, together[i], alone[i])
        assert again[i][:12] == alone[i][:12]
    assert sum(together[i] == alone[i] for i in range(4)) >= 3


@pytest.mark.model
def test_more_requests_than_sequences_queue_and_all_finish(engine):
    questions = {i: f"Say the number {i}." for i in range(7)}
    with engine.parallel(2) as batched:
        replies = run_threads(batched, questions, Sampling(temperature=0, max_tokens=8))
    assert sorted(replies) == list(range(7))
    assert all(reply.strip() for reply in replies.values())


@pytest.mark.model
def test_the_driving_thread_may_read_a_reply_itself_and_stop_early(engine):
    with engine.parallel(1) as batched:
        stream = iter(batched.stream(ask("Tell me a long story."), Sampling(temperature=0, max_tokens=200)))
        first = next(stream)
        assert first.text
        stream.close()  # its sequence is freed: the next request gets it
        chunks = list(batched.stream(ask("Name a colour."), GREEDY))
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and text_of(chunks).strip()


@pytest.mark.model
def test_a_queued_reply_closed_before_it_is_read_never_takes_a_sequence(engine):
    # translate queues every paragraph of a chunk at once; after Ctrl-C or an error the replies it
    # will not read are closed, and must not be written anyway
    with engine.parallel(1) as batched:
        first = batched.stream(ask("Name a colour."), GREEDY)
        dropped = batched.stream(ask("Tell me a long story."), Sampling(temperature=0, max_tokens=400, ignore_eos=True))
        last = batched.stream(ask("What is the capital of France?"), GREEDY)
        dropped.close()
        assert text_of(first).strip() and text_of(last).strip()
        assert list(dropped) == []
        assert not batched.busy
        assert batched.cached(0)[-1] != 0 and len(batched.cached(0)) < 200  # the last reply's cache, not 400 tokens of a story


@pytest.mark.model
def test_closing_a_reply_from_another_thread_wakes_its_waiting_reader(engine):
    # translate reads each queued paragraph in a thread of its own; after an error the others'
    # replies are closed from the failing thread, and their readers must not wait forever
    with engine.parallel(1) as batched:
        busy = batched.stream(ask("Tell me a long story."), Sampling(temperature=0, max_tokens=300, ignore_eos=True))
        waiting = batched.stream(ask("Name a colour."), GREEDY)  # queued behind it: the only sequence is busy
        got: list[list] = []
        reader = threading.Thread(target=lambda: got.append(list(waiting)), daemon=True)
        reader.start()
        assert next(busy).text is not None  # this thread drives a step
        waiting.close()
        reader.join(timeout=5)
        assert not reader.is_alive() and got == [[]]
        busy.close()


@pytest.mark.model
def test_closing_ends_replies_in_flight_with_an_error(engine):
    batched = engine.parallel(2)
    seen: list[BaseException] = []
    started = threading.Event()

    def worker() -> None:
        try:
            for _ in batched.stream(ask("Tell me a long story."), Sampling(temperature=0, max_tokens=500)):
                started.set()
        except EngineError as exc:
            seen.append(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    while not started.is_set():
        batched.pump(0.05)
    batched.close()
    thread.join(timeout=10)
    assert seen and "closed" in str(seen[0])
    with pytest.raises(EngineError):
        batched.stream(ask("hello"), GREEDY)


@pytest.mark.model
def test_a_prompt_longer_than_a_sequence_is_refused(engine):
    with engine.parallel(2, n_ctx=256) as batched:
        assert batched.context_length == 256
        with pytest.raises(ContextOverflowError):
            batched.stream(ask("word " * 400), GREEDY)


def test_automatic_count_keeps_the_kv_caches_within_a_gibibyte():
    assert auto_parallel(23040, 4096) == 4  # the embedded model: 90 MiB a sequence
    assert auto_parallel(131072, 4096) == 2  # an 8B Llama: 512 MiB a sequence
    assert auto_parallel(131072, 32768) == 1
    assert auto_parallel(None, 4096) == 1  # unknown shape: one at a time


@pytest.mark.model
def test_the_embedded_models_kv_size_is_read_from_its_metadata(engine):
    # SmolLM2-135M: 30 layers, 3 KV heads of 64: 30 * 3 * (64 + 64) * 2 bytes
    assert engine.info.kv_bytes_per_token == 23040
