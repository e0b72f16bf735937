"""What one-shot commands share: gather the input, render the template, make the trip once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from gptcli.cli.app import AppState
from gptcli.cli.options import GenOptions
from gptcli.cli.structured import StructOptions
from gptcli.config import Settings
from gptcli.engines import Engine, Message, Sampling, choose, sampling_from
from gptcli.errors import InputError, ReplyCut, StoreError, UsageError
from gptcli.flow import OutputMode, generate
from gptcli.render import Env, Reply
from gptcli.templates import Template, load_template, parse_vars
from gptcli.textio import read_stream, read_text

if TYPE_CHECKING:
    from gptcli.schema import Structure
    from gptcli.session import Session
    from gptcli.store import ConversationStore

MessageBuilder = Callable[[Template, str, dict[str, str], Engine, Sampling], list[Message]]


def read_material(st: AppState, file: str | None) -> str | None:
    """Text from ``--file`` (``-`` is stdin), else from stdin when it is not a terminal.

    A ``--file`` with nothing in it is an error rather than a silent question about nothing.
    """
    if file and file != "-":
        text = read_text(file)
        if not text.strip():
            raise InputError(f"{file} is empty: nothing to read")
    elif file == "-" or not st.env.stdin_isatty:
        text = read_stream(st.env.stdin)
    else:
        return None
    return text


def output_mode(gen: GenOptions, settings: Settings) -> OutputMode:
    """How replies are shown, from the output flags and the ``loop_guard`` setting (``settings``: flags applied)."""
    return OutputMode(plain=gen.plain, json=gen.json, stream=not gen.no_stream, stats=gen.stats, loop_guard=settings.loop_guard)


def run_template(
    st: AppState,
    template_name: str,
    gen: GenOptions,
    *,
    prompt: str | None = None,
    file: str | None = None,
    var: list[str] | None = None,
    instructions: str | None = None,
    input_from_prompt: bool = True,
    build_messages: MessageBuilder | None = None,
    continue_: bool = False,
    session: str | None = None,
    structured: StructOptions = StructOptions(),
) -> int:
    """Render ``template_name`` with the input and stream the reply. Returns the exit code.

    The exchange is saved as a one-exchange session unless history is off; ``continue_`` (the
    latest session) or ``session`` (by id or title) puts that conversation before the new prompt
    and appends the exchange to it.

    ``build_messages(template, text, values, engine, sampling)`` replaces the plain render (``support``
    uses it to fit knowledge-base passages into the context window).

    ``structured`` (``--schema``, ``--grammar``, or the template's ``schema``) constrains the reply
    and shows it as JSON; with ``--each-line`` each input line is a request of its own (``run_each_line``).
    """
    settings = gen.settings(st.settings)
    template = load_template(template_name)
    values = parse_vars(var)
    if instructions is not None and any(v.name == "instructions" for v in template.variables):
        values["instructions"] = instructions
    template.values(values)  # unknown or missing variables fail before any reading or loading
    structure = structured.structure(template)  # a bad schema fails before the model loads

    def compose(material: str | None) -> str:
        """The user's text: the prompt and the material, or the instructions and the material."""
        if material is not None and not material.strip():
            material = None if prompt else ""
        if input_from_prompt:
            parts = [p for p in (prompt, material) if p and p.strip()]
            text = "\n\n".join(parts)
            if not text and template.input_required:
                raise InputError("nothing to ask: give a prompt, or pipe text into gptcli")
            return text
        if instructions and "instructions" not in values:
            material = f"{instructions}\n\n{material}" if material else instructions
        text = material or ""
        if not text.strip() and template.input_required:
            raise InputError(f"no input for '{template_name}': pipe text into it or use --file")
        return text

    material = read_material(st, file)
    if material is not None:
        material = material.replace("\r\n", "\n")  # a CRLF file reads like any other
    if structured.each_line:
        if continue_ or session:
            raise UsageError("--each-line makes one request per line: it cannot --continue a conversation")
        if material is None:
            raise InputError("--each-line reads its lines from stdin or --file: pipe them in")
        return run_each_line(st, settings, template, values, material, compose, structure, gen, structured, build_messages)
    text = compose(material)

    history = OneShotHistory.open(settings, st.env, continue_=continue_, session=session)
    sampling = sampling_from(settings, template.temperature, template.max_tokens, edits=template.edits)
    local = choose.engine_kind(settings) == "local"
    if structure is not None:
        sampling = structure.sampling(sampling, local=local)
    if build_messages is None:
        messages = template.render(text, values)
        engine = _engine_for(settings, messages, sampling, resuming=history.resumed is not None)
    else:
        engine = choose.open_engine(settings)
    if build_messages is not None:
        messages = build_messages(template, text, values, engine, sampling)
    if history.resumed is not None:
        messages = history.continued(messages, engine, settings, sampling)
    basis = (prompt or instructions or text).strip()
    title = (basis if template_name == "ask" else f"{template_name}: {basis}") if basis else None
    try:
        try:
            reply = generate(engine, messages, sampling, st.env, output_mode(gen, settings), structure)
        except ReplyCut as cut:  # a server died mid-reply, stdout closed or full, JSON off its schema: keep what came
            history.save(messages, cut.partial, model=engine.model_name, template=template_name, title=title)
            raise cut.cause from None
        history.save(messages, reply, model=engine.model_name, template=template_name, title=title)
        history.keep_state(engine)
    finally:
        history.close()
    return 130 if reply.interrupted else 0


def run_each_line(
    st: AppState,
    settings: Settings,
    template: Template,
    values: dict[str, str],
    material: str,
    compose: Callable[[str], str],
    structure: Structure | None,
    gen: GenOptions,
    structured: StructOptions,
    build_messages: MessageBuilder | None,
) -> int:
    """``--each-line``: the template once per input line (or JSON Lines record), one JSON value per output line.

    Replies are not saved in the history (they are the output); a failed line is reported with its
    number and the exit code is 1; Ctrl-C stops the batch with the finished lines written (130).
    """
    from gptcli.batch import read_records, run_batch

    records = read_records(material)
    sampling = sampling_from(settings, template.temperature, template.max_tokens)
    local = choose.engine_kind(settings) == "local"
    if structure is not None:
        sampling = structure.sampling(sampling, local=local)
    engine = choose.open_engine(settings)
    jobs = []
    for record in records:
        given = {**values, **{k: v for k, v in record.values.items() if template.variable(k) is not None}}
        text = compose(record.text)
        if build_messages is None:
            messages = template.render(text, given)
        else:
            messages = build_messages(template, text, given, engine, sampling)
        jobs.append((record, messages))
    summary = run_batch(engine, jobs, sampling, structure, st.env, json_events=gen.json, parallel=structured.parallel)
    if gen.stats:
        rate = summary.completion_tokens / summary.seconds if summary.seconds else 0.0
        st.env.notice(
            f"{summary.written + summary.failed} of {len(records)} lines in {summary.seconds:.1f} s"
            f" · {summary.completion_tokens} reply tokens · {rate:.1f} tok/s"
        )
    if summary.interrupted:
        st.env.notice(f"interrupted: {summary.written} of {len(records)} lines written")
        return 130
    if summary.failed:
        st.env.error(f"{summary.failed} of {len(records)} lines failed (reported above with their line numbers)")
        return 1
    return 0


def _engine_for(settings: Settings, messages: list[Message], sampling: Sampling, *, resuming: bool) -> Engine:
    """The engine, with a local model's context no larger than this one exchange needs.

    A prompt of n bytes is at most n tokens, and a chat template adds a few dozen of its own, so
    the need is known before the model loads; the exact count is checked once it has, and a
    template that took more gets the usual window. A resumed conversation is fitted to the whole
    window, so it keeps the usual one.
    """
    if resuming or not sampling.max_tokens or choose.engine_kind(settings) != "local":
        return choose.open_engine(settings)
    need = sum(len(m["content"].encode("utf-8")) + 16 for m in messages) + 256 + sampling.max_tokens
    engine = choose.open_engine(dataclasses.replace(settings, fit=need))
    from gptcli.engines.local import LocalEngine, default_context, release_engines

    if not isinstance(engine, LocalEngine):
        return engine
    if engine.context_length < default_context(engine.info, settings.ctx):
        if engine.count_tokens(messages) + sampling.max_tokens > engine.context_length:
            release_engines()
            engine = choose.open_engine(settings)
    return engine


class OneShotHistory:
    """The store side of a one-shot command: the session it continues (a ``Session``), and saving the exchange."""

    def __init__(self, env: Env, store: ConversationStore | None, resumed: Session | None, saving: bool) -> None:
        self.env = env
        self.store = store
        self.resumed = resumed
        self.saving = saving and store is not None

    @classmethod
    def open(cls, settings: Settings, env: Env, *, continue_: bool, session: str | None) -> OneShotHistory:
        """Open the store before the model loads, so a broken history file fails fast."""
        if continue_ and session:
            raise UsageError("use either --continue or --session, not both")
        if not (continue_ or session or settings.history):
            return cls(env, None, None, False)  # history off: the store is not even imported
        from gptcli.store import ConversationStore, open_history

        if not (continue_ or session):
            return cls(env, open_history(settings, env), None, True)
        from gptcli.session import Session

        store = ConversationStore.open()  # reading works with history off; saving does not
        resumed = Session.latest_or_named(settings, env.notice, store, session)
        return cls(env, store, resumed, bool(settings.history))

    def continued(self, messages: list[Message], engine: Engine, settings: Settings, sampling: Sampling) -> list[Message]:
        """The resumed conversation, fitted to the context window, then the new prompt; its saved model state restored."""
        assert self.resumed is not None
        template_system = next((m["content"] for m in messages if m["role"] == "system"), None)
        conversation = self.resumed.conversation(fallback_system=template_system)
        pending = messages[-1]["content"]
        policy = "stop" if settings.overflow == "stop" else "drop"  # one-shot: no summarizing pass
        fitted = conversation.fit(engine, pending, policy=policy, max_tokens=sampling.max_tokens)
        if fitted.notice:
            self.env.notice(fitted.notice)
        self.resumed.restore_state(engine)
        return fitted.messages

    def save(self, messages: list[Message], reply: Reply, *, model: str, template: str, title: str | None) -> None:
        """Save the exchange (also when interrupted); a store failure is a notice, not an error."""
        if self.store is None or not self.saving:
            return
        user = messages[-1]["content"] if messages else ""
        try:
            if self.resumed is None:
                system = next((m["content"] for m in messages if m["role"] == "system"), None)
                self.store.save_exchange(
                    user, reply.text, reply.usage, reply.interrupted, model=model, template=template, system=system, title=title
                )
                return
            if self.resumed.info.model != model:
                self.store.set_model(self.resumed.id, model)
            self.store.add_turn(self.resumed.id, user, reply.text, usage=reply.usage, interrupted=reply.interrupted)
        except StoreError as exc:
            self.env.notice(f"history not saved: {exc}")

    def keep_state(self, engine: Engine) -> None:
        """After a saved turn of a continued session: keep the model's KV state for the next one."""
        if self.resumed is not None and self.saving:
            self.resumed.keep_state(engine)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
