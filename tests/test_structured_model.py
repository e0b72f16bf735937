"""Structured output with the real embedded model: grammar-constrained replies parse and validate."""

from __future__ import annotations

import json
import random

import pytest

from gptcli.engines import Sampling
from gptcli.engines.local import LocalEngine
from gptcli.models import embedded_model_path
from gptcli.schema import Structure, check_reply
from gptcli.templates import load_template

pytestmark = pytest.mark.model

# bounded strings: every reply the grammar allows fits in the token budget, so none can be cut short
# (the nullable one too: a type list's maxLength once went missing from the grammar)
BOUNDED = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24}, "age": {"type": "integer"}, "city": {"type": "string", "maxLength": 24},
        "nickname": {"type": ["string", "null"], "maxLength": 8},
    },
    "required": ["name", "age", "city", "nickname"],
    "additionalProperties": False,
}
MESSAGE = [{"role": "user", "content": "Hi, I'm Maria, 34 years old, from Lisbon. Give my details as JSON."}]


def test_twenty_seeded_runs_all_parse_and_validate():
    engine = LocalEngine(embedded_model_path(), ctx=512)
    try:
        sampling = Structure(schema=BOUNDED).sampling(Sampling(temperature=1.0, max_tokens=128), local=True)
        batched = engine.parallel(4, 256)
        # queued at once, read in order by this (the driving) thread: four decode side by side
        streams = [batched.stream(MESSAGE, Sampling(**{**sampling.__dict__, "seed": seed})) for seed in range(20)]
        values = []
        for stream in streams:
            chunks = list(stream)
            text = "".join(c.text for c in chunks)
            values.append(check_reply(text, BOUNDED, chunks[-1].usage))  # raises unless it parses and validates
        batched.close()
    finally:
        engine.close()
    assert len(values) == 20
    assert len({json.dumps(v) for v in values}) > 1  # twenty seeds at temperature 1: not one reply repeated


def test_concise_schema_on_the_command_line(run_gptcli):
    proc = run_gptcli("ask", "Tom is 12 and lives in Oslo.", "--schema", "name, age int, city", "-n", "40", "--seed", "1", "--ctx", "512")
    assert proc.returncode == 0, proc.stderr
    value = json.loads(proc.stdout)
    assert set(value) == {"name", "age", "city"} and isinstance(value["age"], int)
    assert proc.stdout.count("\n") == 1  # one line on a pipe


def test_the_shipped_triage_template_gives_a_valid_record(run_gptcli):
    message = "My order #A-10234 has not arrived after two weeks. I need it urgently!"
    proc = run_gptcli("ask", "-t", "triage", message, "--seed", "1", "--ctx", "1024", "--json")
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout.splitlines()[-1])
    check_reply(json.dumps(done["data"]), load_template("triage").schema or {})
    assert done["data"]["urgency"] in ("low", "medium", "high")


def test_each_line_on_thirty_lines_keeps_input_order(run_gptcli):
    rng = random.Random(5)
    numbers = [rng.randint(100, 999) for _ in range(30)]
    lines = "".join(f"Order number {n}\n" for n in numbers)
    schema = '{"type": "object", "properties": {"order": {"type": "integer"}}, "required": ["order"]}'
    proc = run_gptcli(
        "ask", "Reply with the order number as JSON.", "--schema", schema, "--each-line",
        "-n", "12", "--temperature", "0", "--ctx", "512", input=lines, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(out) == 30
    # greedy, and the number is in the line: each output line is its own input line's
    assert [v["order"] for v in out] == numbers


def test_a_reply_cut_mid_object_is_reported(run_gptcli):
    proc = run_gptcli("ask", "Describe Ada Lovelace.", "--schema", "name, born int, bio: a long biography", "-n", "6", "--seed", "1", "--ctx", "512")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == "error: the reply reached the length limit (6 tokens) before its JSON was complete: raise -n/--max-tokens"


def test_each_line_reports_cut_records_by_line_and_writes_nothing_half(run_gptcli):
    proc = run_gptcli(
        "ask", "Describe the person as JSON.", "--schema", "name, bio: a long biography", "--each-line", "-n", "5", "--ctx", "512",
        input="Ada Lovelace\n\nAlan Turing\n",
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[1].strip() for line in lines[:2]] == ["line 1", "line 3"]
    assert "length limit" in lines[0] and lines[-1] == "error: 2 of 2 lines failed (reported above with their line numbers)"
