"""The translator: a plan's chunks through an engine, one at a time or several at once, written in order."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from gptcli.engines import Batching, Chunk, Concurrent, Engine
from gptcli.errors import UsageError
from gptcli.repetition import SENTENCE_END, loop_start, repeats_itself
from gptcli.translate.assembly import Assembler
from gptcli.translate.cache import TranslationCache
from gptcli.translate.checks import Checker
from gptcli.translate.document import Unit
from gptcli.translate.glossary import Glossary
from gptcli.translate.job import ChunkResult, Events, Job, Summary
from gptcli.translate.planning import DEFAULT_CHUNK_TOKENS, EXPANSION, MARGIN, MIN_CHUNK_TOKENS, Atom, DocChunk, Plan, plan_document
from gptcli.translate.replies import atom_reply_end, could_match, match_translation, normalize_atom, prompt_lines, strip_preamble
from gptcli.translate.spans import RestoringEvents, protect_spans, restore_spans
from gptcli.workers import run_workers

RETRY_TEMPERATURE = 0.5  # a piece sent again after its reply failed a check is sampled at least this warm


class _Cancelled(Exception):
    pass


def _close(stream: Iterator[Chunk]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()


class Translator:
    """Translates a plan's chunks through an engine, ``parallel`` at a time, writing in order."""

    def __init__(
        self,
        engine: Engine,
        job: Job,
        *,
        cache: TranslationCache | None = None,
        resume: bool = True,
        parallel: int = 1,
        checker: Checker | None = None,
    ) -> None:
        self.engine = engine
        self.job = job
        self.cache = cache
        self.resume = resume
        self.parallel = max(1, parallel)
        self.cancel = threading.Event()
        self.overhead = 0
        self.echoes = prompt_lines(job.messages(""))  # lines of the instructions a reply may repeat
        self.checker = checker or Checker(job.target.code, None if job.source.code == "auto" else job.source.code)
        # a model that keeps breaking packed chunks gets its parts one by one from then on; until
        # one packed chunk has come back whole, only one is tried at a time (chunks in parallel
        # would otherwise all be tried, and all be translated twice, by a model that cannot)
        self.packed_ok = 0
        self.packed_failed = 0
        self.packed_trying = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ planning

    def prompt_overhead(self, glossary_text: str = "") -> int:
        """Tokens the template takes around an empty input (with the glossary terms ``glossary_text`` needs)."""
        values = dict(self.job.values)
        if any(v.name == "glossary" for v in self.job.template.variables):
            values["glossary"] = Glossary.render(self.job.glossary.relevant(glossary_text))
        return self.engine.count_tokens(self.job.template.render("", values))

    def chunk_budget(self, text: str, limit: int | None = None) -> int:
        """The most source tokens a chunk may hold so prompt, chunk and translation fit the context."""
        self.overhead = self.prompt_overhead(text)
        room = self.engine.context_length - self.overhead - MARGIN
        budget = int(room / (1 + EXPANSION))
        if budget < MIN_CHUNK_TOKENS:
            raise UsageError(
                f"the context window ({self.engine.context_length} tokens) leaves no room to translate:"
                f" the prompt alone takes {self.overhead}; use a larger --ctx"
            )
        return min(budget, limit or DEFAULT_CHUNK_TOKENS)

    def plan(self, text: str, *, markdown: bool, chunk_tokens: int | None = None) -> Plan:
        budget = self.chunk_budget(text, chunk_tokens)
        return plan_document(text, self.engine.tokenize_count, budget, markdown=markdown)

    # ------------------------------------------------------------ one trip

    def _max_tokens(self, source_tokens: int) -> int:
        room = self.engine.context_length - self.overhead - source_tokens - 8
        limit = int(source_tokens * 3) + 32
        if self.job.max_tokens:
            limit = self.job.max_tokens
        return max(1, min(room, limit))

    def _open(
        self, engine: Engine, text: str, source_tokens: int, result: ChunkResult, events: Events | None, retry: bool = False
    ) -> Iterator[Chunk]:
        """Send one request; its reply is read with ``_read`` (a batched engine starts on it at once).

        No stop string: where a reply ends is the reader's call (``_read``'s ``until``), since a
        bare piece ends at its first line or paragraph only after any preamble a small model writes.
        A ``retry`` samples with another seed and a temperature of at least ``RETRY_TEMPERATURE``:
        greedy decoding would only write the failed reply again."""
        sampling = replace(self.job.sampling, max_tokens=self._max_tokens(source_tokens), stop=(), ignore_eos=False)
        if retry:
            seed = None if sampling.seed is None else sampling.seed + 1
            sampling = replace(sampling, seed=seed, temperature=max(sampling.temperature, RETRY_TEMPERATURE))
        if events is not None:
            events.attempt(result.index)
        return iter(engine.stream(self.job.messages(text), sampling))

    def _read(
        self,
        stream: Iterator[Chunk],
        result: ChunkResult,
        events: Events | None,
        source: str,
        watch: Callable[[str], bool] | None = None,
        until: Callable[[str], int | None] | None = None,
    ) -> str | None:
        """A reply's text, its usage added to ``result``; None if ``watch`` (asked at each new line)
        gave up on it. ``until`` (asked at each new line too) says where the reply is complete:
        it is read no further, and cut there.

        A reply stuck in a loop (see ``loop_start``; unless ``source`` repeats itself that way) is
        stopped there and cut before the repetition: it would write on to its length limit.
        """
        text = ""
        usage = None
        given_up = cut = False
        guard = not repeats_itself(source)
        try:
            for piece in stream:
                if self.cancel.is_set():
                    raise _Cancelled
                usage = piece.usage or usage  # every piece carries the reply's usage so far
                if not piece.text:
                    continue
                text += piece.text
                if events is not None:
                    events.token(result.index, piece.text)
                if guard:  # at each sentence's end, and at each word's (most tokens begin with a space)
                    ends_sentence = bool(SENTENCE_END.search(piece.text))
                    if ends_sentence or piece.text[:1].isspace() or piece.text[-1:].isspace():
                        if (at := loop_start(text, sentences=ends_sentence)) is not None:
                            text, cut = text[:at].rstrip(), True
                            break
                if "\n" not in piece.text:
                    continue
                if watch is not None and not watch(text):
                    given_up = True
                    break
                if until is not None and (end := until(text)) is not None:
                    text = text[:end]
                    break
        finally:
            _close(stream)
        if usage is not None:
            result.prompt_tokens += usage.prompt_tokens
            result.cached_tokens += usage.cached_tokens
            result.completion_tokens += usage.completion_tokens
            if usage.finish_reason in ("length", "context") and not (given_up or cut):
                result.truncated += 1
        result.looped += cut
        return None if given_up else text

    def _open_atom(self, engine: Engine, atom: Atom, result: ChunkResult, events: Events | None, retry: bool = False) -> Iterator[Chunk]:
        return self._open(engine, atom.text, engine.tokenize_count(atom.text), result, events, retry)

    def _read_atom(self, stream: Iterator[Chunk], atom: Atom, result: ChunkResult, events: Events | None) -> str:
        return self._read(stream, result, events, atom.text, until=lambda reply: atom_reply_end(atom, reply, self.echoes)) or ""

    def _translate_atoms(
        self,
        engine: Engine,
        atoms: Sequence[Atom],
        result: ChunkResult,
        events: Events | None,
        retry: bool = False,
        judge: Callable[[int, str], tuple[str, ...]] | None = None,
        retried: set[int] | None = None,
    ) -> list[str]:
        """Each atom's translation ("" if nothing came: the checks then send it again). An engine
        that decodes several replies at once gets them all together, so that one chunk's paragraphs
        fill its sequences, each reply read by a thread of its own (so that each is stopped as soon
        as it is complete); others get them one by one.

        One by one, with ``judge`` (atom ``k``'s reply -> the checks it fails), a reply that fails
        is sent again at once, its index added to ``retried``: its prompt is then the very one the engine's KV cache holds, so only its last
        token is evaluated again (sent later, after other pieces, the whole piece would be)."""
        if isinstance(engine, Concurrent) and len(atoms) > 1:
            outputs = self._read_together(engine, atoms, result, retry)
            return [normalize_atom(atom, output, self.echoes) for atom, output in zip(atoms, outputs)]
        replies = []
        for k, atom in enumerate(atoms):  # one at a time: each request is sent when the one before it is done
            reply = self._translate_atom(engine, atom, result, events, retry)
            if judge is not None and retried is not None and judge(k, reply):
                reply = self._translate_atom(engine, atom, result, events, retry=True)
                retried.add(k)
            replies.append(reply)
        return replies

    def _translate_atom(self, engine: Engine, atom: Atom, result: ChunkResult, events: Events | None, retry: bool = False) -> str:
        return normalize_atom(atom, self._read_atom(self._open_atom(engine, atom, result, events, retry), atom, result, events), self.echoes)

    def _read_together(self, engine: Engine, atoms: Sequence[Atom], result: ChunkResult, retry: bool = False) -> list[str]:
        parts = [ChunkResult(result.index, []) for _ in atoms]  # each reader counts on its own
        streams: list[Iterator[Chunk]] = []
        futures: list[Future[str]] = []
        pool = ThreadPoolExecutor(len(atoms), thread_name_prefix="translate-piece")
        try:
            streams.extend(self._open_atom(engine, atom, part, None, retry) for atom, part in zip(atoms, parts))
            futures.extend(pool.submit(self._read_atom, *job, None) for job in zip(streams, atoms, parts))
            return [future.result() for future in futures]
        finally:
            if not all(future.done() for future in futures):  # one failed: stop the others' replies
                for stream in streams:
                    with contextlib.suppress(ValueError):  # a generator its reader is running
                        _close(stream)
            pool.shutdown(wait=True)
            for stream in streams:  # replies never read (an error while sending) are cancelled
                _close(stream)
            for part in parts:
                result.add_reads(part)

    def translate_chunk(
        self, chunk: DocChunk, events: Events | None = None, markdown: bool = True, engine: Engine | None = None
    ) -> ChunkResult:
        """Translate one chunk: whole when packed (its structure checked), else atom by atom.

        Its inline code, link targets and URLs go to the model as placeholders (``protect_spans``)
        and come back as they were. Each piece's reply is then judged (``Checker``): one that fails
        a check (wrong language, implausible length, added structure, a number or a span lost) is
        sent once more on its own, and if it still fails the piece keeps its source text, counted in ``kept_source``: never a
        broken link or an unbalanced fence in the document."""
        engine = engine or self.engine
        started = time.perf_counter()
        sent, spans = protect_spans(chunk)
        if spans and sent.packed:  # the room for a whole chunk's reply is measured by what is sent
            sent.source_tokens = engine.tokenize_count(sent.source)  # (a bare atom's is counted as it goes)
        if spans and events is not None:
            events = RestoringEvents(events, spans)

        judged: dict[tuple[int, str], tuple[str, ...]] = {}  # a reply judged as it came (one by one) is not judged again

        def judge(k: int, reply: str) -> tuple[str, ...]:
            if (k, reply) not in judged:
                judged[k, reply] = self.checker.failed(chunk.atoms[k].text, restore_spans(reply, spans))
            return judged[k, reply]

        retried: set[int] = set()  # pieces already sent again (one by one, right after their first reply)
        result = self._translate(sent, events, markdown, engine, judge, retried)
        replies = list(result.translations)
        verdicts = [judge(k, reply) for k, reply in enumerate(replies)]
        again = [k for k, verdict in enumerate(verdicts) if verdict and k not in retried]
        if again:  # together: an engine that decodes several at once gets them in one batch
            for k, reply in zip(again, self._translate_atoms(engine, [sent.atoms[k] for k in again], result, events, retry=True)):
                replies[k], verdicts[k] = reply, judge(k, reply)
            retried.update(again)
        result.translations = [chunk.atoms[k].text if verdict else restore_spans(reply, spans) for k, (reply, verdict) in enumerate(zip(replies, verdicts))]
        result.retried = len(retried)
        result.checks = verdicts
        result.kept_source = sum(bool(verdict) for verdict in verdicts)
        result.spans_lost = sum("spans" in verdict for verdict in verdicts)
        result.seconds = time.perf_counter() - started
        result.glossary_misses = self._glossary_misses(chunk, result.translations)
        return result

    def _translate(
        self,
        chunk: DocChunk,
        events: Events | None,
        markdown: bool,
        engine: Engine,
        judge: Callable[[int, str], tuple[str, ...]] | None = None,
        retried: set[int] | None = None,
    ) -> ChunkResult:
        result = ChunkResult(chunk.index, [])
        translations: list[str] | None = None
        if chunk.packed and self._try_packed():
            try:
                stream = self._open(engine, chunk.source, chunk.source_tokens, result, events)
                output = self._read(stream, result, events, chunk.source, lambda partial: could_match(chunk, partial, markdown, self.echoes))
                translations = None if output is None else match_translation(chunk, strip_preamble(output, chunk.source, self.echoes), markdown)
            finally:
                with self._lock:
                    self.packed_trying -= 1
            with self._lock:
                if translations is None:
                    self.packed_failed += 1
                else:
                    self.packed_ok += 1
            result.packed = translations is not None
            result.fell_back = translations is None
        if translations is None:
            translations = self._translate_atoms(engine, chunk.atoms, result, events, judge=judge, retried=retried)
        result.translations = translations
        return result

    def _try_packed(self) -> bool:
        """Whether to send a packed chunk whole (and count it as being tried) or its parts one by one."""
        with self._lock:
            if self.packed_failed >= 2 and self.packed_failed > self.packed_ok:
                return False
            if not self.packed_ok and self.packed_trying:
                return False
            self.packed_trying += 1
            return True

    def _glossary_misses(self, chunk: DocChunk, translations: Sequence[str]) -> list[str]:
        pairs = self.job.glossary.relevant(chunk.source)
        joined = "\n".join(translations).casefold()
        return [term for term, target in pairs if target.casefold() not in joined]

    # ------------------------------------------------------------ the document

    def run(self, plan: Plan, write: Callable[[str], None], events: Events | None = None, spaceless: bool = False) -> Summary:
        """Translate every chunk (cached ones from the cache), writing the document in order."""
        summary = Summary()
        self.cancel.clear()
        started = time.perf_counter()
        assembler = Assembler(plan, spaceless)
        keys = [self.job.chunk_key(chunk) for chunk in plan.chunks]
        todo: list[DocChunk] = []
        cached: list[ChunkResult] = []
        self.checker.learn_source("".join(block.text for block in plan.blocks if isinstance(block, Unit)))
        for chunk, key in zip(plan.chunks, keys):
            hit = self.cache.get(key, len(chunk.atoms)) if (self.cache and self.resume) else None
            if hit is not None:
                translations, verdicts = hit
                if verdicts is None:  # an entry from before the checks: judged now
                    verdicts = [self.checker.failed(atom.text, text) for atom, text in zip(chunk.atoms, translations)]
                cached.append(ChunkResult(chunk.index, translations, cached=True, checks=verdicts))
            else:
                todo.append(chunk)
        if events is not None:
            events.start(plan, len(cached))
        for result in cached:
            assembler.add(plan.chunks[result.index], result.translations)
            summary.add(result)
            if events is not None:
                events.chunk_done(plan.chunks[result.index], result)
        write(assembler.drain())

        def finish(result: ChunkResult) -> None:
            chunk = plan.chunks[result.index]
            if self.cache is not None:
                self.cache.put(keys[result.index], result.translations, result.checks)
            assembler.add(chunk, result.translations)
            summary.add(result)
            summary.source_tokens += chunk.source_tokens  # what was sent to the model this run
            if events is not None:
                events.chunk_done(chunk, result)
            write(assembler.drain())

        try:
            if self.parallel == 1 or len(todo) <= 1:
                for chunk in todo:
                    finish(self.translate_chunk(chunk, events, plan.markdown))
            else:
                self._run_parallel(todo, finish, plan.markdown)
        finally:
            self.cancel.set()
            summary.seconds = time.perf_counter() - started
        write(assembler.drain())
        return summary

    def _run_parallel(self, todo: list[DocChunk], finish: Callable[[ChunkResult], None], markdown: bool) -> None:
        """Up to ``parallel`` chunks in flight on daemon threads; results handled here, in any order.

        An engine that runs several replies at once itself (the local one: ``parallel(n)`` gives a
        batched form of it, driven from this thread by ``pump``) is used that way; other engines
        (remote ones) are called from the threads directly.
        """
        count = min(self.parallel, len(todo))
        # the longest request: prompt, source and room for the reply (the longest chunk's)
        longest = max(self.overhead + c.source_tokens + self._max_tokens(c.source_tokens) + 8 for c in todo)
        batched = self.engine.parallel(count, longest) if isinstance(self.engine, Batching) else None
        engine = batched or self.engine
        run_workers(
            todo,
            lambda chunk: self.translate_chunk(chunk, None, markdown, engine),
            lambda _, result: finish(result),
            width=count,
            batched=batched,
            cancel=self.cancel,
            quiet=(_Cancelled,),
            name="translation",
        )
