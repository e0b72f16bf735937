"""The chat REPL: prompt-toolkit input, key bindings, Tab completion and slash commands."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import IO, Any

from gptcli.config import KEYS, Settings, data_dir, ensure_private_dir
from gptcli.conversation import POLICIES, Conversation, Turn
from gptcli.engines import Engine, Message, Sampling, choose, sampling_from
from gptcli.errors import ContextOverflowError, GptcliError, StoreError, Terminated, UsageError
from gptcli.flow import OutputMode, generate
from gptcli.render import Env, OutputClosed, OutputFailed, Reply, wrap_words

PROMPT = "› "
CONTINUATION = "· "
SHOWN_ON_RESUME = 3  # exchanges printed when a stored chat is resumed

# ---------------------------------------------------------------- slash commands (pure parsing)


@dataclass(frozen=True)
class CommandSpec:
    name: str
    arg: str  # "" (no argument), "[ARG]" (optional) or "ARG" (required)
    help: str


COMMANDS: dict[str, CommandSpec] = {
    c.name: c
    for c in [
        CommandSpec("help", "", "List these commands and the keys."),
        CommandSpec("new", "", "Start a new conversation (same system prompt and settings)."),
        CommandSpec("retry", "", "Regenerate the last reply."),
        CommandSpec("continue", "", "Carry on the last reply where it stopped (at the length limit, or interrupted)."),
        CommandSpec("undo", "", "Remove the last exchange."),
        CommandSpec("system", "[TEXT]", "Set the system prompt (no TEXT: show it; 'off' removes it)."),
        CommandSpec("template", "[NAME KEY=VALUE...]", "Use a template's system prompt (with its variables); no NAME lists them."),
        CommandSpec("model", "[NAME_OR_PATH]", "Switch to another model (no argument: show the current one)."),
        CommandSpec("set", "[KEY VALUE]", "Change a setting: temperature, top_p, top_k, min_p, repeat_penalty, max_tokens, seed, overflow."),
        CommandSpec("schema", "[SCHEMA]", "Reply with JSON that follows SCHEMA (file, inline JSON, 'name, age int'); 'off' stops."),
        CommandSpec("tokens", "", "Show how the context window is used and the room left for the reply."),
        CommandSpec("stats", "[on|off]", "Turn the status line after each reply on or off (no argument: switch)."),
        CommandSpec("save", "NAME", "Name this conversation, to resume it with `gptcli chat -s NAME`."),
        CommandSpec("sessions", "", "List saved conversations."),
        CommandSpec("load", "ID_OR_NAME", "Switch to a saved conversation."),
        CommandSpec("export", "FILE", "Write this conversation to FILE (Markdown, or JSON for .json)."),
        CommandSpec("edit", "[TEXT]", "Write a message in $VISUAL/$EDITOR (starting from TEXT), then send it."),
        CommandSpec("file", "PATH", "Attach a text file to the next message (also: @PATH in a message)."),
        CommandSpec("copy", "[N]", "Copy the last reply (N: its Nth code block) to the clipboard."),
        CommandSpec("clear", "", "Clear the screen (the conversation goes on)."),
        CommandSpec("exit", "", "Leave (also Ctrl-D)."),
    ]
}
ALIASES = {"quit": "exit", "q": "exit", "h": "help", "?": "help", "reset": "new"}
SETTABLE = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens", "seed", "overflow")

_COMMAND_WORD = re.compile(r"/([A-Za-z?][A-Za-z0-9_-]*)(?=\s|$)")


class UnknownCommand(UsageError):
    """A slash command that does not exist: shown as a one-line hint, the chat goes on."""


@dataclass(frozen=True)
class Command:
    """A parsed slash command; ``/set`` carries its checked ``key`` and ``value``."""

    name: str
    arg: str = ""
    key: str | None = None
    value: Any = None


def parse_command(line: str) -> Command | None:
    """``/name arg`` -> ``Command``; ``None`` when ``line`` is a message for the model.

    A line is a command when it starts with ``/word``: ``/usr/bin/env is what?`` and ``//text``
    (sent as ``/text``) are messages. Only ``GptcliError``s are raised, for unknown commands and
    bad arguments.
    """
    text = line.strip()
    match = _COMMAND_WORD.match(text)
    if match is None:
        return None
    word = match.group(1).lower()
    name = ALIASES.get(word, word)
    arg = text[match.end() :].strip()
    spec = COMMANDS.get(name)
    if spec is None:
        close = get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
        hint = f"did you mean /{close[0]}? " if close else ""
        raise UnknownCommand(f"unknown command /{word}: {hint}/help lists the commands")
    if spec.arg == "" and arg:
        raise UsageError(f"/{name} takes no argument")
    if spec.arg and not spec.arg.startswith("[") and not arg:
        raise UsageError(f"/{name} needs {spec.arg}: /{name} {spec.arg}")
    if name == "set" and arg:
        key, value = parse_setting(arg)
        return Command(name, arg, key, value)
    return Command(name, arg)


def parse_setting(arg: str) -> tuple[str, Any]:
    """``temperature 0.7`` (or ``temperature=0.7``) -> ``("temperature", 0.7)``, checked like the config file."""
    key_text, _, value_text = arg.replace("=", " ", 1).strip().partition(" ")
    key = key_text.strip().lower().replace("-", "_")
    value_text = value_text.strip()
    if key in ("temp",):
        key = "temperature"
    if key not in SETTABLE:
        raise UsageError(f"/set cannot change '{key_text}': choose one of {', '.join(SETTABLE)}")
    if not value_text:
        raise UsageError(f"/set {key} needs a value, for example /set {key} {_example_value(key)}")
    spec = KEYS[key]
    value: Any
    if key == "seed" and value_text.lower() in ("random", "none", "off"):
        return key, None
    try:
        if spec.kind is float:
            value = float(value_text)
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
        elif spec.kind is int:
            value = int(value_text)
        else:
            value = value_text.lower()
        value = spec.check(value)
    except (ValueError, OverflowError, TypeError) as exc:
        why = str(exc) if str(exc).startswith("must") else f"must be {'a number' if spec.kind is float else 'a whole number' if spec.kind is int else 'one of ' + ', '.join(POLICIES)}"
        raise UsageError(f"/set {key} {why}") from None
    return key, value


def _example_value(key: str) -> str:
    return {"temperature": "0.7", "top_p": "0.9", "top_k": "40", "min_p": "0.05", "repeat_penalty": "1.1",
            "max_tokens": "512", "seed": "42", "overflow": "drop"}[key]


KEYS_HELP = [
    "Enter sends · Alt-Enter (or Esc Enter) adds a line",
    "Up/Down recall input history (what is typed filters it) · Ctrl-R searches it, Enter sends the match",
    "Ctrl-X Ctrl-E edits the message in $VISUAL/$EDITOR · @PATH attaches a file (Tab completes it)",
    "Tab completes commands, templates and models · Ctrl-C stops a reply or clears the line · Ctrl-D leaves",
    "// at the start sends a message that begins with / (the first / is dropped)",
]


def help_text(width: int = 100) -> str:
    """What ``/help`` prints at ``width`` columns: the commands, then the keys, wrapped at words.

    Wide enough, a command and its help share a line; narrower, the help goes under the command.
    """
    import textwrap

    width = max(20, width)
    names = [f"/{c.name} {c.arg}".strip() for c in COMMANDS.values()]
    column = max(len(n) for n in names)
    lines: list[str] = []
    for name, spec in zip(names, COMMANDS.values()):
        if width >= column + 4 + 30:
            indent = " " * (column + 4)
            lines += textwrap.wrap(spec.help, width, initial_indent=f"  {name:<{column}}  ", subsequent_indent=indent, break_on_hyphens=False)
        else:
            lines.append(f"  {name}")
            lines += textwrap.wrap(spec.help, width, initial_indent="      ", subsequent_indent="      ", break_on_hyphens=False)
    lines.append("")
    for item in KEYS_HELP:
        lines += textwrap.wrap(item, width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    return "\n".join(lines)


def short_count(n: int) -> str:
    """1234 -> ``1.2k``, 4096 -> ``4k`` (k = 1024, as context sizes are named)."""
    if n < 1000:
        return str(n)
    value = n / 1024
    return f"{value:.1f}".rstrip("0").rstrip(".") + "k"


def code_blocks(markdown: str) -> list[str]:
    """The code blocks (fenced or indented) of a Markdown text, in order."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(markdown)
    return [t.content.removesuffix("\n") for t in tokens if t.type in ("fence", "code_block")]


ATTACHMENT = re.compile(r"(?:(?<=\s)|^)@(\S+)")
MAX_ATTACHMENT = 1_000_000  # bytes: a larger file would not fit any context window


def read_attachment(spec: str) -> tuple[str, str]:
    """The (shown path, text) of a file to attach; ``UsageError`` when it is missing or not text."""
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UsageError(f"no such file: {spec}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {spec}: {exc.strerror or exc}") from None
    if len(data) > MAX_ATTACHMENT:
        raise UsageError(f"{spec} is {len(data) // 1024} KB: too large to attach (at most {MAX_ATTACHMENT // 1024} KB)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{spec} is not a text file (UTF-8)") from None
    if "\x00" in text:
        raise UsageError(f"{spec} is not a text file")
    return spec, text


def with_attachments(message: str, files: Sequence[tuple[str, str]]) -> str:
    """The message followed by each file's text in a fence longer than any backtick run inside it."""
    parts = [message]
    for name, text in files:
        longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
        fence = "`" * max(3, longest + 1)
        parts.append(f"{name}:\n{fence}\n{text.rstrip()}\n{fence}")
    return "\n\n".join(parts)


CONTINUE_PROMPT = "Continue exactly where your last reply stopped, without repeating anything."


# ---------------------------------------------------------------- the chat itself


class ChatSession:
    """One chat: the engine (loaded once), the conversation, the store, and what each command does.

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

    # ------------------------------------------------------------ output helpers

    def say(self, text: str) -> None:
        """What a command was asked to show, on stdout (an ``info`` event with ``--json``)."""
        if self.mode.json:
            from gptcli.render import write_event

            write_event(self.env.stdout, {"type": "info", "text": text})
            return
        if self.env.stdout_isatty:  # a terminal breaks words; wrap them whole
            text = wrap_words(text, self.width())
        try:
            print(text, file=self.env.stdout, flush=True)
        except BrokenPipeError:
            from gptcli.render import OutputClosed

            raise OutputClosed from None

    def width(self) -> int:
        """The terminal's width now (it may have been resized)."""
        return self.env.console().width

    def notice(self, text: str) -> None:
        """Something that happened by itself (a one-line dim note on stderr)."""
        self.env.notice(text)

    def hint(self, text: str) -> None:
        """A one-line hint (an unknown command...): dim, on stderr, shown even with --quiet."""
        if self.env.stderr_isatty:
            text = wrap_words(text, self.env.err_console.width)
        self.env.err_console.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)

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
            if Path(spec).expanduser().is_file() and spec not in {name for name, _ in files}:
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
        except (GptcliError, OutputClosed) as exc:
            # stdout closed or full: the turn is kept, then the chat ends (the command reports it once)
            output_lost = isinstance(exc, (OutputClosed, OutputFailed))
            if not output_lost:
                self.env.error(str(exc))
            partial: Reply | None = getattr(exc, "partial_reply", None)  # a remote server died mid-reply
            if partial is None or not partial.text:
                if output_lost:
                    raise
                return None
            reply, failed = Reply(partial.text, partial.usage, interrupted=True), True
            if output_lost:
                self.conversation.add_turn(text, reply.text, reply.interrupted)
                if save:
                    self._save_turn(text, reply)
                raise
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
            self._save_turn(text, reply)
        return reply

    def _print_stats(self, reply: Reply) -> None:
        """The status line, counting the context as /tokens does (the reply now in the history)."""
        from gptcli.render import stats_line

        max_tokens = self.sampling().max_tokens
        budget = self.conversation.budget(self.engine, max_tokens)
        self.notice(stats_line(reply.usage, budget.used, budget.context, reply_cap=max_tokens))

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
        from gptcli.render import Activity

        if self.mode.json or not (self.env.stderr_isatty and self.env.styled(self.env.stderr)):
            return None
        return Activity(self.env.stderr, label).start()

    # ------------------------------------------------------------ the store

    def _store_call(self, action: Callable[[], Any]) -> Any:
        """Run a store call; a failure is reported once and history is off for the rest of the chat."""
        if self.store is None:
            return None
        try:
            return action()
        except StoreError as exc:
            self.env.error(f"{exc} (history is off for the rest of this chat)")
            self.store = None
            return None

    def _ensure_session(self) -> Any:
        if self.store is not None and self.saving and self.session_id is None:
            info = self._store_call(
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

    def _save_turn(self, user: str, reply: Reply) -> None:
        if self._ensure_session() is None:
            return
        self.state_unsaved = True
        self._store_call(
            lambda: self.store.add_turn(self.session_id, user, reply.text, usage=reply.usage, interrupted=reply.interrupted)
        )

    def _need_store(self, what: str) -> Any:
        if self.store is None:
            raise UsageError(f"{what} needs the history store, which is off (--no-history or history = false)")
        return self.store

    def resume(self, info: Any, *, show: bool = True) -> None:
        """Make the stored session ``info`` the current conversation, and show its last exchanges."""
        store = self._need_store("resuming a chat")
        if self.saving:
            from gptcli import sessionlock

            sessionlock.claim(info.id)  # another chat adding turns to it: refused, not interleaved
        from gptcli.session import Session

        session = Session(self.settings, self.notice, store, info)
        loaded = self._store_call(session.turns)
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
        styled = not self.mode.plain and self.env.styled_output()
        console = self.env.console()
        if self.env.stdout_isatty and not self.env.raw:  # stored replies may hold a model's escape sequences
            from gptcli.textio import sanitize_terminal

            turns = [dataclasses.replace(t, user=sanitize_terminal(t.user), reply=sanitize_terminal(t.reply)) for t in turns]
        for turn in turns:
            if styled:
                from rich.text import Text

                from gptcli.render import reply_markdown

                console.print(Text(PROMPT + turn.user, style="bold"))
                if turn.reply.strip():
                    console.print(reply_markdown(turn.reply))
                if turn.interrupted:
                    console.print(Text("(interrupted)", style="dim"))
            else:
                self.say(PROMPT + turn.user)
                self.say(turn.reply + (" (interrupted)" if turn.interrupted else ""))

    # ------------------------------------------------------------ slash commands

    def run_command(self, command: Command) -> bool:
        handler = getattr(self, f"cmd_{command.name}")
        return handler(command) is not False

    def cmd_help(self, command: Command) -> None:
        self.say(help_text(self.width() if self.env.stdout_isatty else 100))

    def cmd_exit(self, command: Command) -> bool:
        return False

    def keep_state(self) -> None:
        """Save the model's KV cache for the current session, so `chat -c` need not re-read it.

        Only when a turn was added: leaving a resumed chat untouched does not rewrite its state.
        """
        if not self.state_unsaved:
            return
        from gptcli.session import keep_state

        self.state_unsaved = False
        keep_state(self.settings, self.store, self.session_id, self.engine, self.notice)

    def cmd_new(self, command: Command) -> None:
        self.keep_state()
        self.conversation = Conversation(system=self.conversation.system)
        self.last_finish = ""
        self.session_id = None
        self.session_title = None
        self.notice("new conversation")

    def cmd_clear(self, command: Command) -> None:
        if self.env.stdout_isatty:
            self.env.console().clear()

    def cmd_retry(self, command: Command) -> None:
        last = self.conversation.pop_turn()
        if last is None:
            self.hint("nothing to retry yet")
            return
        reply = self.send(last.user, save=False)
        if reply is None:  # the new reply failed: the old exchange stays
            self.conversation.turns.append(last)
            return
        if self.session_id is not None:  # the stored exchange is replaced by the new one
            self._store_call(lambda: self.store.drop_last_exchange(self.session_id))
        self._save_turn(last.user, reply)

    def cmd_undo(self, command: Command) -> None:
        last = self.conversation.pop_turn()
        if last is None:
            self.hint("nothing to undo")
            return
        if self.session_id is not None:
            self._store_call(lambda: self.store.drop_last_exchange(self.session_id))
        preview = last.user if len(last.user) <= 60 else last.user[:57] + "..."
        self.notice(f"removed the last exchange ({preview!r})")

    def cmd_system(self, command: Command) -> None:
        if not command.arg:
            self.say(self.conversation.system or "(no system prompt: the model's default applies)")
            return
        system = None if command.arg.lower() in ("off", "none", "clear") else command.arg
        self.set_system(system)
        self.notice("system prompt removed" if system is None else "system prompt set")

    def set_system(self, system: str | None) -> None:
        self.conversation.system = system
        if self.session_id is not None:
            self._store_call(lambda: self.store.set_system(self.session_id, system))

    def cmd_template(self, command: Command) -> None:
        import shlex

        if not command.arg:
            names = template_names()
            current = f" (in use: {self.template_name})" if self.template_name else ""
            self.say(f"templates{current}: " + ", ".join(names) + "\n/template NAME [KEY=VALUE...] uses one")
            return
        try:
            name, *pairs = shlex.split(command.arg)
        except ValueError as exc:
            raise UsageError(f"/template: {exc} (quote values like tone='very formal')") from None
        self.use_template(name, pairs)
        self.notice(f"template '{name}': its system prompt applies from the next message")

    def use_template(self, name: str, pairs: Sequence[str] = ()) -> None:
        """Make the template's system prompt (its variables filled from ``key=value`` pairs) the chat's."""
        template, system = template_system(name, pairs)
        self.template_name = name
        self.template_temperature = template.temperature
        self.set_system(system)

    def cmd_model(self, command: Command) -> None:
        if not command.arg:
            self.say(f"{self.engine.model_name} (context {self.engine.context_length} tokens)")
            return
        self.switch_model(command.arg)

    def switch_model(self, spec: str) -> None:
        """Load another model, freeing the current one first; on failure the current one comes back."""
        new_settings = self.settings.with_flags(model=spec)
        old_settings, old_engine = self.settings, self.engine
        if choose.engine_kind(new_settings) == "local":
            from gptcli.models import resolve_model

            path = resolve_model(spec).path  # an unknown name fails here, before anything is freed
            if path.is_file():
                self.keep_state()
                _release_local(old_engine)
        try:
            engine = choose.open_engine(new_settings)
        except GptcliError:
            self.engine = choose.open_engine(old_settings) if _is_released(old_engine) else old_engine
            raise
        self.settings, self.engine = new_settings, engine
        if self.session_id is not None:
            self._store_call(lambda: self.store.set_model(self.session_id, engine.model_name))
        self.notice(f"now using {engine.model_name} (context {engine.context_length} tokens)")

    def cmd_set(self, command: Command) -> None:
        if command.key is None:
            sampling = self.sampling()
            shown = {
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": sampling.top_k,
                "min_p": sampling.min_p,
                "repeat_penalty": sampling.repeat_penalty,
                "max_tokens": sampling.max_tokens,
                "seed": "random" if sampling.seed is None else sampling.seed,
                "overflow": self.overflow,
            }
            self.say("\n".join(f"  {k} = {v}" for k, v in shown.items()))
            return
        if command.key == "overflow":
            self.overflow = command.value
        else:
            values, sources = dict(self.settings.values), dict(self.settings.sources)
            values[command.key], sources[command.key] = command.value, "flag"
            import dataclasses

            self.settings = dataclasses.replace(self.settings, values=values, sources=sources)
        shown_value = "random" if command.key == "seed" and command.value is None else command.value
        self.notice(f"{command.key} = {shown_value}")

    def cmd_schema(self, command: Command) -> None:
        from gptcli.schema import Structure, dump, parse_schema, schema_grammar

        if not command.arg:
            self.say(dump(self.structure.schema, pretty=True) if self.structure else "(no schema: replies are free text)")
        elif command.arg.lower() in ("off", "none", "clear"):
            self.structure = None
            self.notice("schema off: replies are free text")
        else:
            structure = Structure(schema=parse_schema(command.arg))
            if choose.engine_kind(self.settings) == "local":
                schema_grammar(structure.schema or {})  # a schema the grammar cannot express fails now
            self.structure = structure
            self.notice("schema set: replies are JSON that follows it (/schema off stops)")

    def cmd_tokens(self, command: Command) -> None:
        cap = self.sampling().max_tokens
        self.say(budget_line(self.conversation.budget(self.engine, cap), cap or self.engine.context_length))

    def cmd_stats(self, command: Command) -> None:
        choice = command.arg.lower()
        if choice in ("on", "yes", "true", "1"):
            self.stats = True
        elif choice in ("off", "no", "false", "0"):
            self.stats = False
        elif not choice:
            self.stats = not self.stats
        else:
            raise UsageError(f"/stats takes on or off, not '{command.arg}'")
        self.notice(f"status line {'on' if self.stats else 'off'}")

    def cmd_continue(self, command: Command) -> None:
        if not self.conversation.turns:
            self.hint("nothing to continue yet")
            return
        last = self.conversation.turns[-1]
        if self.last_finish not in ("length", "interrupted") and not last.interrupted:
            self.hint("the last reply ended by itself: /continue carries on one cut short (the length limit, or Ctrl-C)")
            return
        self.send(CONTINUE_PROMPT)

    def cmd_copy(self, command: Command) -> None:
        if not self.conversation.turns:
            self.hint("nothing to copy yet")
            return
        reply = self.conversation.turns[-1].reply
        what = "the last reply"
        if command.arg:
            blocks = code_blocks(reply)
            if not command.arg.isdigit() or not 1 <= int(command.arg) <= len(blocks):
                have = f"/copy 1 to /copy {len(blocks)}" if blocks else "it has none"
                raise UsageError(f"the last reply has {len(blocks)} code block{'s' if len(blocks) != 1 else ''}: {have}")
            reply, what = blocks[int(command.arg) - 1], f"code block {command.arg}"
        ways = copy_to_clipboard(reply, self.env)
        if not ways:
            raise UsageError("no way to reach the clipboard here: not a terminal, and no clipboard tool found")
        self.notice(f"copied {what} ({len(reply)} characters) via {' and '.join(ways)}")

    def cmd_edit(self, command: Command) -> None:
        text = edit_text(command.arg)
        if not text.strip():
            self.hint("nothing sent: the message was left empty")
            return
        self.say(PROMPT + text)
        self.handle(text)

    def cmd_file(self, command: Command) -> None:
        name, text = read_attachment(command.arg)
        self.attachments.append((name, text))
        self.notice(f"attached {name} ({len(text)} characters): it goes with your next message")

    def cmd_save(self, command: Command) -> None:
        store = self._need_store("/save")
        if not self.saving:
            raise UsageError("/save needs history, which is off (--no-history or history = false)")
        if not self.conversation.turns:
            self.hint("nothing to save yet: send a message first")
            return
        title = " ".join(command.arg.split())
        try:
            other = store.find_session(title)
        except StoreError:  # no session has this name (or id)
            other = None
        if other is not None and other.id != self.session_id:
            raise UsageError(
                f"'{title}' already names another conversation ({other.id}, {other.turns} turns): choose another name"
                " (gptcli history lists them)"
            )
        self.session_title = command.arg
        if self._ensure_session() is None:
            return
        self._store_call(lambda: store.rename(self.session_id, command.arg))
        self.notice(f"saved as '{command.arg}': resume it with gptcli chat -s {_shell_word(command.arg)}")

    def cmd_sessions(self, command: Command) -> None:
        store = self._need_store("/sessions")
        sessions = self._store_call(lambda: store.list_sessions(limit=20)) or []
        if not sessions:
            self.say("no saved conversations yet")
            return
        for info in sessions:
            marker = "*" if info.id == self.session_id else " "
            self.say(f"{marker} {session_line(info)}")

    def cmd_load(self, command: Command) -> None:
        store = self._need_store("/load")
        info = store.find_session(command.arg)
        self.resume(info)

    def cmd_export(self, command: Command) -> None:
        from gptcli.textio import atomic_write

        path = Path(command.arg).expanduser()
        text = export_text(self, as_json=path.suffix.lower() == ".json")
        atomic_write(path, text)
        n = len(self.conversation.turns)
        self.notice(f"wrote {n} exchange{'s' if n != 1 else ''} to {path}")


def budget_line(budget: Any, max_tokens: int) -> str:
    """What ``/tokens`` says: the window's use (the figure the status line shows) and the reply's room."""
    turns = f"{budget.visible_turns} turn{'s' if budget.visible_turns != 1 else ''}"
    parts = [f"system {budget.system}"]
    if budget.summary:
        parts.append(f"summary {budget.summary}")
    parts.append(f"history {budget.history} ({turns})")
    line = f"context {budget.used}/{budget.context} tokens: " + " + ".join(parts)
    room = min(max_tokens, budget.free)
    line += f"; {budget.free} left: the next reply may use {room}" + (f" (capped at {max_tokens}: /set max_tokens)" if max_tokens <= budget.free else "")
    if budget.hidden_turns:
        line += f"; {budget.hidden_turns} older turn{'s' if budget.hidden_turns != 1 else ''} out of view (still stored)"
    return line


def copy_to_clipboard(text: str, env: Env) -> list[str]:
    """Put ``text`` on the clipboard: OSC 52 to the terminal (works over SSH and in tmux) and a
    system clipboard tool where one is installed. Returns the ways used."""
    import shutil
    import subprocess

    from gptcli.render import osc52

    ways: list[str] = []
    terminal = env.stdout if env.stdout_isatty else env.stderr if env.stderr_isatty else None
    if terminal is not None:
        try:
            terminal.write(osc52(text))
            terminal.flush()
            ways.append("the terminal (OSC 52)")
        except OSError:
            pass
    tools: list[list[str]] = [["pbcopy"], ["clip.exe"]]
    if os.environ.get("WAYLAND_DISPLAY"):
        tools.insert(0, ["wl-copy"])
    if os.environ.get("DISPLAY"):
        tools += [["xclip", "-selection", "clipboard"], ["xsel", "--clipboard", "--input"]]
    for tool in tools:
        if shutil.which(tool[0]) is None:
            continue
        try:
            done = subprocess.run(tool, input=text.encode("utf-8"), timeout=5, capture_output=True, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            ways.append(tool[0])
            break
    return ways


def edit_text(text: str = "") -> str:
    """``text`` edited in ``$VISUAL``/``$EDITOR`` (click finds one); what was saved comes back."""
    import click

    try:
        edited = click.edit(text, extension=".md", require_save=False)
    except click.ClickException as exc:
        raise UsageError(f"cannot open an editor: {exc.format_message()} (set $EDITOR)") from None
    return (edited or "").rstrip("\n")


def template_system(name: str, pairs: Sequence[str] = ()) -> tuple[Any, str | None]:
    """The template ``name`` and its system prompt, variables filled from ``key=value`` pairs."""
    from gptcli.templates import TemplateLibrary, parse_vars, render_text

    template = TemplateLibrary.load().get(name)
    given = parse_vars(list(pairs))
    missing = [v.name for v in template.variables if v.required and v.name not in given]
    if missing:
        needed = " ".join(f"{m}=..." for m in missing)
        raise UsageError(f"template '{name}' needs {needed} (chat -t {name} -v {missing[0]}=..., or /template {name} {needed})")
    values = template.values(given)
    values.setdefault("input", "")
    return template, render_text(template.system, values).strip() or None


def _release_local(engine: Engine) -> None:
    """Free a local model before loading another (two large models may not fit in memory)."""
    try:
        from gptcli.engines import local
    except ImportError:  # pragma: no cover - the package always has it
        return
    if isinstance(engine, local.LocalEngine):
        local.release_engines()


def _is_released(engine: Engine) -> bool:
    try:
        from gptcli.engines import local
    except ImportError:  # pragma: no cover
        return False
    return isinstance(engine, local.LocalEngine)


def _shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)


def session_line(info: Any) -> str:
    """One line of ``/sessions``: id, when, turns, model, title."""
    from datetime import datetime

    when = datetime.fromtimestamp(info.updated).strftime("%Y-%m-%d %H:%M")
    turns = f"{info.turns} turn{'s' if info.turns != 1 else ''}"
    return "  ".join([str(info.id), when, f"{turns:>9}", info.model or "-", info.title or "(untitled)"])


def export_text(chat: ChatSession, as_json: bool) -> str:
    """The whole conversation (turns out of the model's view included), as `gptcli history export` writes it."""
    import time

    from gptcli.store import SessionInfo, StoredMessage, export_json, export_markdown

    conv = chat.conversation
    now = time.time()
    title = chat.session_title or (conv.turns[0].user.split("\n")[0][:60] if conv.turns else "")
    info = SessionInfo(
        str(chat.session_id or "unsaved"), title, now, now, chat.engine.model_name, chat.template_name, conv.system, len(conv.turns)
    )
    messages: list[StoredMessage] = []
    for turn in conv.turns:
        for role, content, interrupted in (("user", turn.user, False), ("assistant", turn.reply, turn.interrupted)):
            messages.append(StoredMessage(len(messages) + 1, info.id, role, content, now, None, None, None, interrupted))
    return export_json(info, messages) if as_json else export_markdown(info, messages)


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


def input_history_path() -> Path:
    """The prompt's input history (not the conversation store): a private file in the data folder."""
    path = ensure_private_dir(data_dir()) / "input_history"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def chat_key_bindings() -> Any:
    """Enter sends; Alt-Enter (Esc Enter) inserts a newline; pasted text stays whole (bracketed paste).

    In a Ctrl-R search, Enter sends the line found.

    Ctrl-J sends too: an Enter typed while a reply streams reaches the prompt as Ctrl-J (the
    terminal turns CR into LF outside raw mode), and it must not become a newline.
    """
    from prompt_toolkit.filters import is_searching
    from prompt_toolkit.key_binding import KeyBindings
    from prompt_toolkit.key_binding.bindings.search import (
        accept_search_and_accept_input,
    )

    bindings = KeyBindings()

    @bindings.add("enter", filter=~is_searching)
    @bindings.add("c-j", filter=~is_searching)
    def _send(event: Any) -> None:
        event.current_buffer.validate_and_handle()

    # Ctrl-R, type, Enter: the match is sent, as bash does (prompt-toolkit's own binding)
    bindings.add("enter", filter=is_searching)(accept_search_and_accept_input)
    bindings.add("c-j", filter=is_searching)(accept_search_and_accept_input)

    @bindings.add("escape", "enter")
    def _newline(event: Any) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


class ChatCompleter:
    """Tab completion: slash commands, then template names, model names, setting keys, sessions, paths."""

    def __init__(
        self,
        templates: Callable[[], Iterable[str]],
        models: Callable[[], Iterable[str]],
        sessions: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        from prompt_toolkit.completion import Completer, PathCompleter

        self._templates = templates
        self._models = models
        self._sessions = sessions
        self._paths = PathCompleter(expanduser=True)
        self._gguf = PathCompleter(expanduser=True, file_filter=lambda name: os.path.isdir(name) or name.endswith(".gguf"))
        completer = self

        class _Adapter(Completer):
            def get_completions(self, document: Any, complete_event: Any) -> Iterator[Any]:
                yield from completer.get_completions(document, complete_event)

        self.adapter = _Adapter()

    def get_completions(self, document: Any, complete_event: Any) -> Iterator[Any]:
        from prompt_toolkit.completion import Completion
        from prompt_toolkit.document import Document

        text = document.text_before_cursor
        mention = re.search(r"(?:(?<=\s)|^)@(\S*)$", text)
        if mention and not text.startswith("/"):  # @path in a message attaches the file
            yield from self._paths.get_completions(Document(mention.group(1)), complete_event)
            return
        if not text.startswith("/") or "\n" in text:
            return
        if " " not in text:
            for name, spec in COMMANDS.items():
                if ("/" + name).startswith(text.lower()):
                    yield Completion("/" + name, start_position=-len(text), display_meta=spec.help)
            return
        command, _, arg = text.partition(" ")
        name = ALIASES.get(command[1:].lower(), command[1:].lower())
        arg = arg.lstrip()

        def words(options: Iterable[str], prefix: str) -> Iterator[Any]:
            for option in sorted(set(options)):
                if option.startswith(prefix):
                    yield Completion(option, start_position=-len(prefix))

        if name == "template":
            yield from words(_safe(self._templates), arg)
        elif name == "model":
            if arg.startswith(("/", ".", "~")) or os.sep in arg:
                yield from self._gguf.get_completions(Document(arg), complete_event)
            else:
                yield from words(_safe(self._models), arg)
        elif name == "set":
            key, space, value = arg.partition(" ")
            if not space:
                yield from words(SETTABLE, key)
            elif key == "overflow":
                yield from words(POLICIES, value.lstrip())
        elif name == "load":
            yield from words(_safe(self._sessions), arg)
        elif name in ("export", "file"):
            yield from self._paths.get_completions(Document(arg), complete_event)
        elif name == "stats":
            yield from words(("on", "off"), arg)


def _safe(source: Callable[[], Iterable[str]]) -> list[str]:
    """Completion data must never break the prompt."""
    try:
        return [str(x) for x in source()]
    except Exception:  # noqa: BLE001 - a broken template folder or store must not end the chat
        return []


def template_names() -> list[str]:
    from gptcli.templates import TemplateLibrary

    return sorted(TemplateLibrary.load().templates)


def model_names() -> list[str]:
    """The embedded model, models the registry knows (when it offers a list), GGUF files here."""
    from gptcli import models

    names = [models.EMBEDDED_NAME]
    for attr in ("model_names", "known_models", "list_model_names"):
        lister = getattr(models, attr, None)
        if callable(lister):
            try:
                names += [str(getattr(m, "name", m)) for m in lister()]
            except Exception:  # noqa: BLE001 - completion only
                pass
            break
    names += [str(p) for p in Path.cwd().glob("*.gguf")]
    return names


def make_prompt_session(chat: ChatSession, *, input: Any = None, output: Any = None) -> Any:
    """The prompt-toolkit session: input history file (searched with Ctrl-R, filtered by what is
    typed), suggestions, keys (vi with ``vi_mode = true``), completion, the editor, the toolbar."""
    from prompt_toolkit import PromptSession
    from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    history: Any = FileHistory(str(input_history_path())) if chat.settings.history else InMemoryHistory()

    def sessions() -> list[str]:
        if chat.store is None:
            return []
        return [str(getattr(s, "title", None) or s.id) for s in chat.store.list_sessions(limit=50)]

    completer = ChatCompleter(template_names, model_names, sessions)

    def continuation(width: int, line_number: int, wrap_count: int) -> str:
        # the marker starts each line of a multi-line message, not each wrapped row of one line
        return CONTINUATION.rjust(width) if wrap_count == 0 else " " * width

    return PromptSession(
        message=FormattedText([("bold", PROMPT)]),
        multiline=True,
        prompt_continuation=continuation,
        key_bindings=chat_key_bindings(),
        history=history,
        auto_suggest=AutoSuggestFromHistory(),
        completer=completer.adapter,
        complete_while_typing=False,
        enable_history_search=True,  # Up/Down with text typed recall only lines starting with it
        enable_open_in_editor=True,  # Ctrl-X Ctrl-E (vi: v) edits the message in $VISUAL/$EDITOR
        vi_mode=bool(chat.settings.vi_mode),
        bottom_toolbar=lambda: chat.gauge(),
        mouse_support=False,
        input=input,
        output=output,
    )


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


@contextlib.contextmanager
def typing_not_echoed(stream: IO[str]) -> Iterator[None]:
    """While a reply streams, keys typed ahead are not echoed into it; they wait for the next prompt.

    Only echo is turned off: Ctrl-C still interrupts.
    """
    try:
        import termios

        fd = stream.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError, io.UnsupportedOperation):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except termios.error:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


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


def open_store(settings: Settings, env: Env) -> Any:
    """The history store, or ``None`` when history is off."""
    from gptcli.store import open_history

    return open_history(settings, env)


def run_chat(settings: Settings, env: Env, request: ChatRequest, mode: OutputMode) -> int:
    """Start the chat: load the model once, resume or template, then read turns until the user leaves."""
    interactive = env.stdin_isatty and (env.stdout_isatty or env.stderr_isatty)
    if not interactive:
        mode = OutputMode(plain=True, json=mode.json, stream=mode.stream, stats=mode.stats)
    if request.template:  # a missing template or variable fails before the model loads
        template_system(request.template, request.template_vars)
    store = open_store(settings, env)
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
        return run_interactive(chat, make_prompt_session(chat, output=output))
    finally:
        if chat is not None:
            chat.keep_state()
        if store is not None:
            store.close()
