"""Batch mode (``--each-line``): one reply per input line or JSON Lines record, written in input order."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gptcli.engines import Batching, Chunk, Concurrent, Engine, Message, Sampling, Usage
from gptcli.errors import ContextOverflowError, GptcliError, InputError
from gptcli.progress import count_progress
from gptcli.render import Env, OutputClosed, write_event
from gptcli.schema import Structure, StructuredReplyError
from gptcli.workers import run_workers

REMOTE_WIDTH = 4  # requests in flight at once to a server, unless --parallel says otherwise


@dataclass(frozen=True)
class Record:
    """One unit of input: its line number (1-based), its text, and template variables from a JSON record."""

    line: int
    text: str
    values: dict[str, str] = field(default_factory=dict)


def read_records(text: str) -> list[Record]:
    """Input lines as records; blank lines are skipped (their numbers still count).

    When the first non-blank line is a JSON object, the input is JSON Lines: every line must be an
    object whose ``input`` (or ``text``) string is the text; its other string or number fields
    become template variables (``-v``) where the template declares them.
    """
    lines = text.split("\n")
    first = next((line for line in lines if line.strip()), "")
    jsonl = first.lstrip().startswith("{")
    records: list[Record] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not jsonl:
            records.append(Record(number, line.rstrip("\r")))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"line {number}: not a JSON object ({exc.msg}); JSON Lines input has one object per line") from None
        if not isinstance(obj, dict):
            raise InputError(f"line {number}: not a JSON object; JSON Lines input has one object per line")
        body = obj.get("input", obj.get("text"))
        if not isinstance(body, str):
            raise InputError(f'line {number}: a record needs an "input" (or "text") string')
        values = {
            key: str(value)
            for key, value in obj.items()
            if key not in ("input", "text") and isinstance(value, str | int | float) and not isinstance(value, bool)
        }
        records.append(Record(number, body, values))
    if not records:
        raise InputError("--each-line found no input lines: pipe them in or use --file")
    return records


@dataclass
class Outcome:
    """How one record ended: its reply text and value, or the error that failed it."""

    record: Record
    text: str = ""
    value: Any = None
    usage: Usage | None = None
    error: GptcliError | None = None


@dataclass
class BatchSummary:
    written: int = 0
    failed: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    completion_tokens: int = 0


Job = tuple[Record, list[Message]]
_RECORD_ERRORS = (StructuredReplyError, ContextOverflowError)  # the record fails; the batch goes on


def run_one(engine: Engine, record: Record, messages: Sequence[Message], sampling: Sampling, structure: Structure | None) -> Outcome:
    """Generate one record's reply to the end and check it (no output)."""
    parts: list[str] = []
    usage: Usage | None = None
    chunk: Chunk
    stream = engine.stream(messages, sampling)
    try:
        for chunk in stream:
            parts.append(chunk.text)
            if chunk.usage is not None:
                usage = chunk.usage
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    text = "".join(parts)
    try:
        value = structure.check(text, usage) if structure is not None and structure.is_json else text
    except StructuredReplyError as exc:
        return Outcome(record, text, None, usage, exc)
    return Outcome(record, text, value, usage)


def run_batch(
    engine: Engine,
    jobs: list[Job],
    sampling: Sampling,
    structure: Structure | None,
    env: Env,
    *,
    json_events: bool = False,
    parallel: int | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> BatchSummary:
    """Run every job, several at once, and write one line per record in input order.

    A batching engine (the local one) opens a batched context of ``parallel`` sequences (default:
    what the engine suggests), driven from this thread while worker threads read the replies;
    other engines (a server) get ``parallel`` requests at once from the threads. Each line is
    written whole once its record and all before it are done, so stdout never holds half a line;
    a failed record is reported on stderr with its line number (and as an ``error`` event with
    ``--json``), and the rest go on.
    """
    import time

    started = time.perf_counter()
    summary = BatchSummary()
    batched: Concurrent | None = None
    if isinstance(engine, Batching):
        width = min(parallel or engine.auto_parallel(), len(jobs))
        if width > 1:
            longest = max(engine.count_tokens(messages) for _, messages in jobs) + (sampling.max_tokens or 512) + 8
            batched = engine.parallel(width, longest)
    else:
        width = min(parallel or REMOTE_WIDTH, len(jobs))
    runner: Engine = batched if batched is not None else engine

    def attempt(job: Job) -> Outcome:
        record, messages = job
        try:
            return run_one(runner, record, messages, sampling, structure)
        except _RECORD_ERRORS as exc:
            return Outcome(record, error=exc)

    writer = _LineWriter(env, json_events)
    progress = count_progress(env)
    done: dict[int, Outcome] = {}  # finished records waiting for those before them
    next_out = 0
    try:
        with progress:
            task = progress.add_task("lines", total=len(jobs))
            if width <= 1:  # one at a time, on this thread: no threads to start
                for job in jobs:
                    _emit(writer, attempt(job), summary, progress, on_outcome)
                    progress.advance(task)
            else:

                def arrived(index: int, outcome: Outcome) -> None:
                    nonlocal next_out
                    done[index] = outcome
                    progress.advance(task)
                    while next_out in done:
                        _emit(writer, done.pop(next_out), summary, progress, on_outcome)
                        next_out += 1

                run_workers(jobs, attempt, arrived, width=width, batched=batched, name="batch")
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.seconds = time.perf_counter() - started
    return summary


def _emit(writer: _LineWriter, outcome: Outcome, summary: BatchSummary, progress: Any, on_outcome: Callable[[Outcome], None] | None) -> None:
    if outcome.usage is not None:
        summary.completion_tokens += outcome.usage.completion_tokens
    if outcome.error is None:
        writer.value(outcome)
        summary.written += 1
    else:
        summary.failed += 1
        writer.failure(outcome, progress)
    if on_outcome is not None:
        on_outcome(outcome)


class _LineWriter:
    """stdout: one whole line per record (the value, or an event with ``--json``); failures on stderr."""

    def __init__(self, env: Env, json_events: bool) -> None:
        self.env = env
        self.json_events = json_events

    def _write(self, line: str) -> None:
        try:
            self.env.stdout.write(line + "\n")
            self.env.stdout.flush()
        except BrokenPipeError:
            raise OutputClosed from None

    def value(self, outcome: Outcome) -> None:
        if self.json_events:
            event = {"type": "done", "line": outcome.record.line, "text": outcome.text, "data": outcome.value,
                     "usage": outcome.usage.as_dict() if outcome.usage else None}
            write_event(self.env.stdout, event)
        else:
            self._write(json.dumps(outcome.value, ensure_ascii=False))

    def failure(self, outcome: Outcome, progress: Any) -> None:
        message = f"line {outcome.record.line}: {outcome.error}"
        if self.json_events:
            write_event(self.env.stdout, {"type": "error", "line": outcome.record.line, "error": str(outcome.error)})
        if progress.live.is_started:  # above the bar, not through it
            progress.console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
        else:
            self.env.error(message)
