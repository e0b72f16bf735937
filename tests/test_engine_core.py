"""The llama layer and its two schedulers, fast: a tiny random-weight GGUF through the real llama.cpp.

Its text is noise, but llama.cpp decodes it exactly as it decodes a real model, so what is checked
here is plumbing a user would notice: the same seed gives the same reply, the cache is reused and
stays right, replies decoded together equal replies decoded alone, grammars hold, embeddings are
stable. The embedded SmolLM2 proves the same paths end to end (test_local_engine.py and others).
"""

from __future__ import annotations

import ast
import json
import math
import threading
from pathlib import Path

import pytest

from gptcli.engines import Batching, Concurrent, Embedding, Engine, Sampling, Stateful
from gptcli.engines.embed import Embedder
from gptcli.engines.llama import json_schema_to_grammar
from gptcli.engines.threads import ThreadGovernor
from gptcli.engines.local import LocalEngine
from gptcli.errors import EngineError
from tests.fakes import collect

ROOT = Path(__file__).resolve().parent.parent
GREEDY = Sampling(temperature=0, max_tokens=24, repeat_penalty=1.0, ignore_eos=True)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]



@pytest.fixture(scope="module")
def engine(tiny_model: Path):
    e = LocalEngine(tiny_model, ctx=512)
    yield e
    e.close()


def test_the_local_engine_declares_its_capabilities_as_protocols(engine):
    assert isinstance(engine, Engine) and isinstance(engine, Stateful) and isinstance(engine, Batching)
    assert not isinstance(engine, Concurrent)
    with engine.parallel(2) as batched:
        assert isinstance(batched, Concurrent) and isinstance(batched, Engine)
        assert not isinstance(batched, Batching)


def test_the_same_seed_gives_the_same_reply_and_another_seed_another(engine):
    sampled = Sampling(temperature=1.0, max_tokens=24, seed=42, ignore_eos=True)
    first, usage = collect(engine.stream(ask("hello"), sampled))
    again, _ = collect(engine.stream(ask("hello"), sampled))
    other, _ = collect(engine.stream(ask("hello"), Sampling(temperature=1.0, max_tokens=24, seed=43, ignore_eos=True)))
    assert first == again and first != other
    assert usage.completion_tokens == 24 and usage.finish_reason == "length"


def test_backend_sampling_draws_the_same_tokens_as_host_sampling(engine):
    # what a GPU build does (the chain runs in llama.cpp's graph); on the CPU the same code runs
    for sampling in (GREEDY, Sampling(temperature=0.8, max_tokens=24, seed=7, ignore_eos=True)):
        engine.offload_sampling = False
        host, _ = collect(engine.stream(ask("same tokens?"), sampling))
        engine.offload_sampling = True
        try:
            backend, _ = collect(engine.stream(ask("same tokens?"), sampling))
        finally:
            engine.offload_sampling = False
        assert backend == host


def test_the_next_turn_reuses_the_cache_and_predicts_as_a_fresh_context(engine, tiny_model):
    first, _ = collect(engine.stream(ask("one"), GREEDY))
    turn2 = ask("one") + [{"role": "assistant", "content": first}, {"role": "user", "content": "two"}]
    second, usage = collect(engine.stream(turn2, GREEDY))
    assert usage.cached_tokens > 10  # the first turn's prompt was not evaluated again
    fresh = LocalEngine(tiny_model, ctx=512)
    try:
        again, fresh_usage = collect(fresh.stream(turn2, GREEDY))
    finally:
        fresh.close()
    assert fresh_usage.cached_tokens == 0 and again == second


def test_a_reply_closed_early_leaves_the_cache_consistent(engine):
    expected, _ = collect(engine.stream(ask("stop me"), GREEDY))
    stream = engine.stream(ask("stop me"), Sampling(temperature=0, max_tokens=200, repeat_penalty=1.0, ignore_eos=True))
    for _ in range(5):
        next(stream)
    stream.close()  # what Ctrl-C does through the renderer
    assert len(engine.kv_tokens) == engine.export_state()[0].__len__()
    again, usage = collect(engine.stream(ask("stop me"), GREEDY))
    assert again == expected and usage.cached_tokens == usage.prompt_tokens - 1


def test_a_saved_state_restores_into_a_fresh_engine(engine, tiny_model):
    collect(engine.stream(ask("remember"), GREEDY))
    tokens, data = engine.export_state()
    fresh = LocalEngine(tiny_model, ctx=512)
    try:
        assert fresh.import_state(tokens, data)
        assert fresh.prefill(tokens + [65, 66]) == len(tokens)
        assert not fresh.import_state(tokens, b"not a state")
        assert fresh.kv_tokens == []
    finally:
        fresh.close()


def test_replies_decoded_together_equal_replies_decoded_alone(engine):
    questions = ["a", "bb", "ccc", "dddd", "eeeee"]
    alone = [collect(engine.stream(ask(q), GREEDY))[0] for q in questions]
    results: dict[int, str] = {}
    with engine.parallel(3) as batched:
        def worker(i: int) -> None:
            try:
                results[i] = collect(batched.stream(ask(questions[i]), GREEDY))[0]
            finally:
                batched.wake()

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(questions))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            batched.pump(0.05)
        assert not batched.busy
    assert [results[i] for i in range(len(questions))] == alone


def test_replies_follow_the_grammar_even_from_random_weights(engine):
    for seed in range(5):
        text, _ = collect(engine.stream(ask("yes or no?"), Sampling(temperature=1.0, seed=seed, max_tokens=8, grammar='root ::= "yes" | "no"')))
        assert text in ("yes", "no")
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}
    text, usage = collect(engine.stream(ask("json"), Sampling(temperature=1.0, seed=3, max_tokens=40, grammar=json_schema_to_grammar(schema))))
    if usage.finish_reason == "stop":  # random weights may run out of tokens mid-number
        assert set(json.loads(text)) == {"n"}
    with pytest.raises(EngineError, match="grammar"):
        collect(engine.stream(ask("x"), Sampling(max_tokens=4, grammar="root ::= (")))


def test_embeddings_are_unit_vectors_stable_across_batches(tiny_model):
    embedder = Embedder(tiny_model, n_ctx=64, n_seq=2)
    try:
        assert isinstance(embedder, Embedding)
        texts = ["first text", "second one", "third", "first text"]
        together = embedder.embed(texts)
        alone = [embedder.embed([t])[0] for t in texts]
        assert len(together) == 4 and all(len(v) == embedder.dimensions for v in together)
        assert all(math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4) for v in together)
        for a, b in zip(together, alone):
            assert sum(x * y for x, y in zip(a, b)) > 0.9999
        assert sum(x * y for x, y in zip(together[0], together[1])) < 0.9999
    finally:
        embedder.close()


def test_the_thread_governor_gives_cores_back_while_others_use_them(monkeypatch):
    clock = {"busy": 0, "total": 0, "own": 0.0, "wall": 0.0}
    monkeypatch.setattr(ThreadGovernor, "_read_stat", staticmethod(lambda: (clock["busy"], clock["total"])))
    monkeypatch.setattr("gptcli.engines.threads.time.process_time", lambda: clock["own"])
    monkeypatch.setattr("gptcli.engines.threads.time.monotonic", lambda: clock["wall"])
    monkeypatch.setattr("gptcli.engines.threads.usable_cores", lambda: 4)
    applied: list[int] = []
    governor = ThreadGovernor(applied.append, 4)
    governor.tick = 100.0

    def second(ours: float, others: float) -> None:  # one second passes: we use ``ours`` cores, others ``others``
        clock["wall"] += 1.0
        clock["own"] += ours
        clock["busy"] += int((ours + others) * 100)
        clock["total"] += 400
        governor.check()

    second(4.0, 0.1)  # idle machine: the default stands
    assert governor.current == 4 and applied == []
    second(3.9, 2.0)  # two cores taken by someone else
    assert governor.current == 2 and applied == [2]
    second(2.0, 2.0)
    assert governor.current == 2
    second(2.0, 0.0)  # they are done: all threads again
    assert governor.current == 4 and applied == [2, 4]
    second(4.0, 9.0)  # never fewer than one
    assert governor.current == 1


def test_the_batched_engine_is_governed_too(tiny_model: Path, monkeypatch):
    # translate and --each-line run on the batched engine: beside a busy process its two spinning
    # threads made each step ten times slower, so its thread count follows the others as one reply's does
    monkeypatch.setattr(ThreadGovernor, "running_now", staticmethod(lambda: 3.0))  # three others running
    monkeypatch.setattr("gptcli.engines.threads.usable_cores", lambda: 2)
    governed = LocalEngine(tiny_model, ctx=512)
    chosen = LocalEngine(tiny_model, ctx=512, threads=2)  # --threads: never governed
    try:
        batched = governed.parallel(2, 256)
        text, usage = collect(batched.stream(ask("hello"), GREEDY))
        assert usage is not None and usage.completion_tokens == 24 and text
        assert batched.governor is not None and batched.governor.current == 1
        batched.close()
        assert chosen.parallel(2, 256).governor is None
    finally:
        governed.close()
        chosen.close()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_one_module_touches_llama_cpp_and_the_engines_have_no_cycle():
    owners = set()
    for path in (ROOT / "gptcli").rglob("*.py"):
        for module, _ in _imports(path):
            if module == "llama_cpp" or module.startswith("llama_cpp."):
                owners.add(path.relative_to(ROOT).as_posix())
    # gptcli serve starts llama-cpp-python's own server (its FastAPI app), nothing else
    assert owners - {"gptcli/server.py"} == {"gptcli/engines/llama.py"}
    engines = ROOT / "gptcli" / "engines"
    graph = {
        p.stem: {m.rsplit(".", 1)[-1] for m, _ in _imports(p) if m.startswith("gptcli.engines.")}
        for p in engines.glob("*.py")
    }
    assert "local" not in graph["parallel"] and "local" not in graph["llama"] and "parallel" not in graph["llama"]


def test_no_module_test_or_benchmark_uses_another_modules_private_names():
    offenders = []
    for folder in ("gptcli", "tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            for module, names in _imports(path):
                if module.startswith(("gptcli", "tests")):
                    offenders += [f"{path.name}: from {module} import {n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert offenders == []


def test_a_looping_chat_template_is_stopped_on_any_thread(monkeypatch):
    # translation renders prompts in worker threads, where SIGALRM cannot reach: the time limit
    # must hold there too (issue 26: a template that loops hung parallel translation)
    from gptcli.engines import chat_template
    from gptcli.errors import ModelError

    monkeypatch.setattr(chat_template, "TEMPLATE_SECONDS", 0.5)
    looping = chat_template.ChatTemplate(
        "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}", eos_token="", bos_token=""
    )
    outcome: list[BaseException] = []

    def render() -> None:
        try:
            looping.render([{"role": "user", "content": "hi"}])
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=render)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert isinstance(outcome[0], ModelError) and "more than 0.5 s" in str(outcome[0])
