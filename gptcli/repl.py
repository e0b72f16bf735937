"""The chat's session loop: one ``ChatSession`` (engine, conversation, store) fed lines from the prompt or a pipe."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from gptcli import render
from gptcli.chat.attachments import ATTACHMENT, read_attachment, with_attachments
from gptcli.chat.commands import Command, UnknownCommand, parse_command
from gptcli.chat.prompt import PROMPT, typing_not_echoed
from gptcli.config import Settings
from gptcli.conversation import Conversation, Turn
from gptcli.engines import Engine, Message, Sampling, choose, sampling_from
from gptcli.errors import ContextOverflowError, GptcliError, ReplyCut, StoreError, Terminated, UsageError
from gptcli.flow import OutputMode, generate
from gptcli.render import Env, OutputClosed, OutputFailed, Reply
from gptcli.textio import user_path

SHOWN_ON_RESUME = 3  # exchanges printed when a stored chat is resumed


def short_count(n: int) -> str:
    """1234 -> ``1.2k``, 4096 -> ``4k`` (k = 1024, as context sizes are named)."""
    if n < 1000:
        return str(n)
    value = n / 1024
    return f"{value:.1f}".rstrip("0").rstrip(".") + "k"


# ---------------------------------------------------------------- the chat itself


class ChatSession:
    """One chat: the engine (loaded once), the conversation, the store; ``gptcli.chat.handlers`` runs its slash commands.

    ``handle(line)`` takes one line of input (a message or a slash command) and returns ``False``
    when the user leaves. The input side (prompt-toolkit or plain lines) lives outside.
    """

    def __init__(
        self,
        settings: Settings,
        env: Env,
        *,
        store: Any = None,
        saving: bool = True,
        mode: OutputMode = OutputMode(),
        interactive: bool = True,
    ) -> None:
        self.settings = settings
        self.env = env
        self.store = store  # read by /sessions, /load, resuming; written only when ``saving``
        self.saving = saving
        self.mode = mode
        self.interactive = interactive
        self.stats = mode.stats
        self.overflow: str = settings.overflow
        self.engine: Engine = choose.open_engine(settings)
        self.conversation = Conversation()
        self.session_id: Any = None
        self.session_title: str | None = None
        self.template_name: str | None = None
        self.template_temperature: float | None = None
        self.last_interrupted = False
        self.last_finish = ""  # why the last reply ended: stop, length, interrupted...
        self.attachments: list[tuple[str, str]] = []  # files that go with the next message
        self.state_unsaved = False  # a turn was added since the model state was last saved or loaded
        self._gauge: str | None = None
        self.structure: Any = None  # /schema: replies are JSON following it (a gptcli.schema.Structure)
        self.structure_from_template = False  # the structure is the template's schema (a new template replaces it)

    # ------------------------------------------------------------ output helpers

    def say(self, text: str) -> None:
        """What a command was asked to show, on stdout (an ``info`` event with ``--json``)."""
        render.say(self.env, text, json_events=self.mode.json)

    def width(self) -> int:
        """The terminal's width now (it may have been resized)."""
        return self.env.console().width

    def notice(self, text: str) -> None:
        """Something that happened by itself (a one-line dim note on stderr)."""
        self.env.notice(text)

    def hint(self, text: str) -> None:
        """A one-line hint (an unknown command, nothing to undo): dim, on stderr."""
        render.hint(self.env, text)

    def banner(self) -> None:
        ctx = self.engine.context_length
        self.notice(f"{self.engine.model_name} · context {ctx} tokens · /help lists commands · Ctrl-D leaves")

    # ------------------------------------------------------------ one line of input

    def gauge(self) -> str:
        """The bottom toolbar: model, context used of the window (``1.2k/4k``), the reply cap."""
        if self._gauge is None:
            try:
                budget = self.conversation.budget(self.engine, self.sampling().max_tokens)
                used = f"{short_count(budget.used)}/{short_count(budget.context)}"
            except Exception:  # noqa: BLE001 - a toolbar must never break the prompt
                used = "?"
            files = f" · {len(self.attachments)} file{'s' if len(self.attachments) != 1 else ''} attached" if self.attachments else ""
            self._gauge = f" {self.engine.model_name} · context {used} · reply ≤ {self.sampling().max_tokens}{files} "
        return self._gauge

    def handle(self, line: str, *, commands: bool = True) -> bool:
        """Act on one line: send it, or run its slash command. ``False``: the user leaves.

        ``commands=False`` (piped input without ``--commands``): every line is a message, so text
        from elsewhere cannot run ``/export PATH`` or any other command.
        """
        self._gauge = None  # recounted for the next prompt
        self.last_interrupted = False
        if not commands:
            if line.strip():
                self.send(line.strip("\n"))
            return True
        try:
            command = parse_command(line)
        except UnknownCommand as exc:
            self.hint(str(exc))
            return True
        except GptcliError as exc:
            self.env.error(str(exc))
            return True
        if command is None:
            text = line.strip("\n")
            if text.lstrip().startswith("//"):
                text = text.replace("//", "/", 1)
            if text.strip():
                try:
                    files = self._mentioned_files(text)
                except GptcliError as exc:
                    self.env.error(str(exc))
                    return True
                if self.send(with_attachments(text, files)) is not None:
                    self.attachments = []
            return True
        try:
            return self.run_command(command)
        except GptcliError as exc:
            self.env.error(str(exc))
            return True

    # ------------------------------------------------------------ a turn

    def sampling(self) -> Sampling:
        sampling = sampling_from(self.settings, self.template_temperature)
        if self.structure is not None:
            sampling = self.structure.sampling(sampling, local=choose.engine_kind(self.settings) == "local")
        return sampling

    def _mentioned_files(self, text: str) -> list[tuple[str, str]]:
        """The files attached with /file, then each ``@path`` in the message that names a file."""
        files = list(self.attachments)
        for match in ATTACHMENT.finditer(text):
            spec = match.group(1).rstrip(".,;:!?)")
            if user_path(spec).is_file() and spec not in {name for name, _ in files}:
                files.append(read_attachment(spec))
        return files

    def send(self, text: str, *, save: bool = True) -> Reply | None:
        """Fit the history, stream the reply, keep the turn. ``None`` when nothing was sent."""
        sampling = self.sampling()
        try:
            fitted = self.conversation.fit(
                self.engine, text, policy=self.overflow, max_tokens=sampling.max_tokens, summarize=self._summarize
            )
        except ContextOverflowError as exc:
            self.env.error(str(exc))
            return None
        except KeyboardInterrupt:
            self.notice("interrupted: nothing was sent")
            return None
        if fitted.notice:
            self.notice(fitted.notice)
        failed = False
        try:
            waiting = f"reading {fitted.prompt_tokens} tokens" if fitted.prompt_tokens else "thinking"
            reply = generate(self.engine, fitted.messages, sampling, self.env, self._output_mode(), self.structure, waiting=waiting)
        except ReplyCut as cut:  # a remote server died mid-reply, JSON off its schema, stdout closed or full
            if isinstance(cut.cause, (OutputClosed, OutputFailed)):  # stdout lost: keep the turn, then the chat ends
                if cut.partial.text:
                    self.conversation.add_turn(text, cut.partial.text, cut.partial.interrupted)
                    if save:
                        self.save_turn(text, cut.partial)
                raise cut.cause from None
            self.env.error(str(cut.cause))
            if not cut.partial.text:
                return None
            reply, failed = cut.partial, True
        except GptcliError as exc:  # before the reply began (OutputClosed is no GptcliError: it ends the chat)
            if isinstance(exc, OutputFailed):
                raise
            self.env.error(str(exc))
            return None
        if reply.interrupted and not failed and not reply.text.strip():  # Ctrl-C before the first token
            self.last_interrupted = True
            self.notice("cancelled: nothing was sent or saved")
            return None
        self.conversation.add_turn(text, reply.text, reply.interrupted)
        self.last_interrupted = reply.interrupted and not failed
        self.last_finish = reply.usage.finish_reason
        if self.stats and not self.mode.json:
            self._print_stats(reply)
        if self.last_interrupted:
            self.notice("(interrupted: the partial reply is kept; /continue carries it on)")
        elif reply.usage.finish_reason == "length":
            self.notice(f"(the reply reached its limit of {sampling.max_tokens} tokens: /continue carries it on)")
        if save:
            self.save_turn(text, reply)
        return reply

    def _print_stats(self, reply: Reply) -> None:
        """The status line, counting the context as /tokens does (the reply now in the history)."""
        max_tokens = self.sampling().max_tokens
        budget = self.conversation.budget(self.engine, max_tokens)
        self.notice(render.stats_line(reply.usage, budget.used, budget.context, reply_cap=max_tokens))

    def _output_mode(self) -> OutputMode:
        # the status line is the chat's own (``_print_stats``), counted like /tokens
        return OutputMode(plain=self.mode.plain, json=self.mode.json, stream=self.mode.stream, stats=False, loop_guard=self.mode.loop_guard)

    def _summarize(self, request: Sequence[Message], sampling: Sampling) -> str:
        """Ask the model for the note that replaces the oldest turns (not shown, not stored)."""
        self.notice("condensing older turns to make room…")
        sampling = Sampling(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=self.settings.seed,
        )
        activity = self._activity("condensing older turns")
        try:
            return "".join(chunk.text for chunk in self.engine.stream(request, sampling))
        finally:
            if activity is not None:
                activity.stop()

    def _activity(self, label: str) -> Any:
        """A spinner on the terminal for work that shows nothing else (``None`` off a terminal)."""
        if self.mode.json or not (self.env.stderr_isatty and self.env.styled(self.env.stderr)):
            return None
        return render.Activity(self.env.stderr, label).start()

    # ------------------------------------------------------------ the store

    def store_call(self, action: Callable[[], Any]) -> Any:
        """Run a store call; a failure is reported once and history is off for the rest of the chat."""
        if self.store is None:
            return None
        try:
            return action()
        except StoreError as exc:
            self.env.error(f"{exc} (history is off for the rest of this chat)")
            self.store = None
            return None

    def ensure_session(self) -> Any:
        if self.store is not None and self.saving and self.session_id is None:
            info = self.store_call(
                lambda: self.store.create_session(
                    model=self.engine.model_name,
                    template=self.template_name,
                    system=self.conversation.system,
                    title=self.session_title,
                )
            )
            if info is not None:
                self.session_id = info.id
                from gptcli import sessionlock

                sessionlock.claim(info.id)  # a `chat -c` started now must not write into this one
        return self.session_id

    def save_turn(self, user: str, reply: Reply) -> None:
        if self.ensure_session() is None:
            return
        self.state_unsaved = True
        self.store_call(
            lambda: self.store.add_turn(self.session_id, user, reply.text, usage=reply.usage, interrupted=reply.interrupted)
        )

    def need_store(self, what: str) -> Any:
        if self.store is None:
            raise UsageError(f"{what} needs the history store, which is off (--no-history or history = false)")
        return self.store

    def resume(self, info: Any, *, show: bool = True) -> None:
        """Make the stored session ``info`` the current conversation, and show its last exchanges."""
        store = self.need_store("resuming a chat")
        if self.saving:
            from gptcli import sessionlock

            sessionlock.claim(info.id)  # another chat adding turns to it: refused, not interleaved
        from gptcli.session import Session

        session = Session(self.settings, self.notice, store, info)
        loaded = self.store_call(session.turns)
        if loaded is None:
            return
        if self.session_id is not None and self.session_id != info.id:
            self.keep_state()
        system, turns = loaded
        self.conversation = Conversation(system=system, turns=turns)
        self.last_finish = ""
        self.session_id = info.id if self.saving else None  # history off: new turns are not added to it
        self.session_title = getattr(info, "title", None)
        self.template_name = getattr(info, "template", None)
        session.resumed_notice(len(turns))
        session.restore_state(self.engine)
        self.state_unsaved = False
        if show:
            self.show_turns(turns[-SHOWN_ON_RESUME:])

    def show_turns(self, turns: Sequence[Turn]) -> None:
        """Print exchanges as they looked: the user's line, then the reply (Markdown on a terminal)."""
        exchanges = [(t.user, t.reply, t.interrupted) for t in turns]
        render.show_exchanges(self.env, exchanges, prompt=PROMPT, plain=self.mode.plain, json_events=self.mode.json)

    # ------------------------------------------------------------ slash commands and state they change

    def run_command(self, command: Command) -> bool:
        """Run a parsed slash command; ``False``: the user leaves."""
        from gptcli.chat.handlers import HANDLERS

        return HANDLERS[command.name](self, command) is not False

    def keep_state(self) -> None:
        """Save the model's KV cache for the current session, so `chat -c` need not re-read it.

        Only when a turn was added: leaving a resumed chat untouched does not rewrite its state.
        """
        if not self.state_unsaved:
            return
        from gptcli.session import keep_state

        self.state_unsaved = False
        keep_state(self.settings, self.store, self.session_id, self.engine, self.notice)

    def set_system(self, system: str | None) -> None:
        self.conversation.system = system
        if self.session_id is not None:
            self.store_call(lambda: self.store.set_system(self.session_id, system))

    def use_template(self, name: str, pairs: Sequence[str] = ()) -> None:
        """Make the template's system prompt (its variables filled from ``key=value`` pairs) the chat's."""
        template, system = template_system(name, pairs)
        if template.schema is not None:  # a template that declares a schema shapes the replies, as in `ask -t`
            from gptcli.schema import Structure, check_schema, schema_grammar

            check_schema(template.schema)
            if choose.engine_kind(self.settings) == "local":
                schema_grammar(template.schema)  # one the grammar cannot express fails now, not at the reply
            self.structure, self.structure_from_template = Structure(schema=template.schema), True
        elif self.structure_from_template:  # the previous template's schema goes with it; the user's own stays
            self.structure, self.structure_from_template = None, False
        self.template_name = name
        self.template_temperature = template.temperature
        self.set_system(system)


def template_system(name: str, pairs: Sequence[str] = ()) -> tuple[Any, str | None]:
    """The template ``name`` and its system prompt, variables filled from ``key=value`` pairs."""
    from gptcli.templates import load_template, parse_vars, render_text

    template = load_template(name)
    given = parse_vars(list(pairs))
    missing = [v.name for v in template.variables if v.required and v.name not in given]
    if missing:
        needed = " ".join(f"{m}=..." for m in missing)
        raise UsageError(f"template '{name}' needs {needed} (chat -t {name} -v {missing[0]}=..., or /template {name} {needed})")
    values = template.values(given)
    values.setdefault("input", "")
    return template, render_text(template.system, values).strip() or None


# ---------------------------------------------------------------- input: lines from a pipe


def run_lines(chat: ChatSession, stream: IO[str], *, commands: bool = False) -> int:
    """Scripts: one turn per input line (a slash command only with ``commands``), replies as plain text.

    Returns the exit code.
    """
    for raw in _lines(stream):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if not chat.handle(line, commands=commands):
            return 0
        if chat.last_interrupted:
            return 130
    return 0


def _lines(stream: IO[str]) -> Iterator[str]:
    while True:
        line = stream.readline()
        if not line:
            return
        yield line


# ---------------------------------------------------------------- input: the interactive prompt


def run_interactive(chat: ChatSession, session: Any) -> int:
    """The REPL loop. Ctrl-C at the prompt clears the line; Ctrl-D or /exit leaves with 0."""
    while True:
        if Terminated.received:  # SIGTERM: handled like Ctrl-C (the reply in flight is kept), then leave
            return 130
        try:
            line = session.prompt()
        except KeyboardInterrupt:
            continue
        except EOFError:
            return 0
        try:
            with typing_not_echoed(chat.env.stdin):
                if not chat.handle(line):
                    return 0
        except KeyboardInterrupt:  # between pieces of a turn: the turn is abandoned, the chat goes on
            chat.notice("interrupted")


# ---------------------------------------------------------------- the `chat` command's trip


@dataclass(frozen=True)
class ChatRequest:
    """What the command line asked of ``gptcli chat``."""

    continue_last: bool = False
    session: str | None = None
    template: str | None = None
    template_vars: tuple[str, ...] = ()  # key=value pairs for the template's variables
    system: str | None = None
    commands: bool = False  # piped input: lines starting with / run as slash commands
    schema: str | None = None  # --schema: replies are JSON following it


def run_chat(settings: Settings, env: Env, request: ChatRequest, mode: OutputMode) -> int:
    """Start the chat: load the model once, resume or template, then read turns until the user leaves."""
    interactive = env.stdin_isatty and (env.stdout_isatty or env.stderr_isatty)
    if not interactive:
        mode = OutputMode(plain=True, json=mode.json, stream=mode.stream, stats=mode.stats)
    if request.template:  # a missing template or variable fails before the model loads
        template_system(request.template, request.template_vars)
    from gptcli.store import open_history

    store = open_history(settings, env)
    saving = store is not None
    resume_info = None
    if request.session or request.continue_last:
        if store is None:  # history off: the stored chat is read, and nothing new is written
            from gptcli.store import ConversationStore

            store = ConversationStore.open()
        if request.session:
            resume_info = store.find_session(request.session)
        else:
            resume_info = store.latest_session()
            if resume_info is None:
                env.notice("no saved conversation to continue: starting a new one")
    if resume_info is not None and saving:
        from gptcli import sessionlock

        sessionlock.claim(resume_info.id)  # refused before the model loads when another chat has it
    chat: ChatSession | None = None
    try:
        chat = ChatSession(settings, env, store=store, saving=saving, mode=mode, interactive=interactive)
        if interactive:
            chat.banner()
        if resume_info is not None:
            chat.resume(resume_info, show=interactive)
        if request.template:
            chat.use_template(request.template, request.template_vars)
        if request.system:
            chat.set_system(request.system)
        if request.schema:
            chat.run_command(Command("schema", request.schema))
        if not interactive:
            return run_lines(chat, env.stdin, commands=request.commands)
        output = None
        if not env.stdout_isatty:  # `gptcli chat > log`: the prompt goes to the terminal on stderr
            from prompt_toolkit.output import create_output

            output = create_output(stdout=env.stderr)  # type: ignore[arg-type]
        from gptcli.chat.prompt import make_prompt_session

        return run_interactive(chat, make_prompt_session(chat, output=output))
    finally:
        if chat is not None:
            chat.keep_state()
        if store is not None:
            store.close()
