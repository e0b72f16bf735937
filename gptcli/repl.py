"""The chat REPL: prompt-toolkit input, key bindings, Tab completion and slash commands."""

from __future__ import annotations

import contextlib
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
from gptcli.conversation import POLICIES, Conversation, Turn, turns_from_messages
from gptcli.engines import Engine, Message, Sampling, choose, sampling_from
from gptcli.errors import ContextOverflowError, GptcliError, StoreError, Terminated, UsageError
from gptcli.flow import OutputMode, generate
from gptcli.render import Env, Reply

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
        CommandSpec("undo", "", "Remove the last exchange."),
        CommandSpec("system", "[TEXT]", "Set the system prompt (no TEXT: show it; 'off' removes it)."),
        CommandSpec("template", "NAME [KEY=VALUE...]", "Use a template's system prompt (with its variables)."),
        CommandSpec("model", "[NAME_OR_PATH]", "Switch to another model (no argument: show the current one)."),
        CommandSpec("set", "[KEY VALUE]", "Change a setting: temperature, top_p, top_k, min_p, repeat_penalty, max_tokens, seed, overflow."),
        CommandSpec("tokens", "", "Show how the context window is used and the room left for the reply."),
        CommandSpec("stats", "", "Turn the status line after each reply on or off."),
        CommandSpec("save", "NAME", "Name this conversation, to resume it with `gptcli chat -s NAME`."),
        CommandSpec("sessions", "", "List saved conversations."),
        CommandSpec("load", "ID_OR_NAME", "Switch to a saved conversation."),
        CommandSpec("export", "FILE", "Write this conversation to FILE (Markdown, or JSON for .json)."),
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


def help_text() -> str:
    """What ``/help`` prints: the commands, then the keys."""
    width = max(len(f"/{c.name} {c.arg}".strip()) for c in COMMANDS.values())
    lines = [f"  {f'/{c.name} {c.arg}'.strip():<{width}}  {c.help}" for c in COMMANDS.values()]
    lines += [
        "",
        "  Enter sends · Alt-Enter (or Esc Enter) adds a line · Up/Down and Ctrl-R search input history",
        "  Tab completes commands, templates and models · Ctrl-C stops a reply or clears the line · Ctrl-D leaves",
        "  // at the start sends a message that begins with / (the first / is dropped)",
    ]
    return "\n".join(lines)


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
        self.state_unsaved = False  # a turn was added since the model state was last saved or loaded

    # ------------------------------------------------------------ output helpers

    def say(self, text: str) -> None:
        """What a command was asked to show, on stdout (an ``info`` event with ``--json``)."""
        if self.mode.json:
            import json

            text = json.dumps({"type": "info", "text": text}, ensure_ascii=False)
        try:
            print(text, file=self.env.stdout, flush=True)
        except BrokenPipeError:
            from gptcli.render import OutputClosed

            raise OutputClosed from None

    def notice(self, text: str) -> None:
        """Something that happened by itself (a one-line dim note on stderr)."""
        self.env.notice(text)

    def hint(self, text: str) -> None:
        """A one-line hint (an unknown command...): dim, on stderr, shown even with --quiet."""
        self.env.err_console.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)

    def banner(self) -> None:
        ctx = self.engine.context_length
        self.notice(f"{self.engine.model_name} · context {ctx} tokens · /help lists commands · Ctrl-D leaves")

    # ------------------------------------------------------------ one line of input

    def handle(self, line: str) -> bool:
        """Act on one line: send it, or run its slash command. ``False``: the user leaves."""
        self.last_interrupted = False
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
                self.send(text)
            return True
        try:
            return self.run_command(command)
        except GptcliError as exc:
            self.env.error(str(exc))
            return True

    # ------------------------------------------------------------ a turn

    def sampling(self) -> Sampling:
        return sampling_from(self.settings, self.template_temperature)

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
            reply = generate(self.engine, fitted.messages, sampling, self.env, self._output_mode())
        except GptcliError as exc:
            self.env.error(str(exc))
            partial: Reply | None = getattr(exc, "partial_reply", None)  # a remote server died mid-reply
            if partial is None or not partial.text:
                return None
            reply, failed = Reply(partial.text, partial.usage, interrupted=True), True
        self.conversation.add_turn(text, reply.text, reply.interrupted)
        self.last_interrupted = reply.interrupted and not failed
        if self.last_interrupted:
            self.notice("(interrupted: the partial reply is kept)")
        if save:
            self._save_turn(text, reply)
        return reply

    def _output_mode(self) -> OutputMode:
        return OutputMode(plain=self.mode.plain, json=self.mode.json, stream=self.mode.stream, stats=self.stats, loop_guard=self.mode.loop_guard)

    def _summarize(self, request: Sequence[Message], sampling: Sampling) -> str:
        """Ask the model for the note that replaces the oldest turns (not shown, not stored)."""
        self.notice("condensing older turns to make room…")
        sampling = Sampling(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_tokens,
            seed=self.settings.seed,
        )
        return "".join(chunk.text for chunk in self.engine.stream(request, sampling))

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
        stored = self._store_call(lambda: store.messages(info.id))
        if stored is None:
            return
        if self.session_id is not None and self.session_id != info.id:
            self.keep_state()
        rows = [(m.role, m.content, bool(getattr(m, "interrupted", False))) for m in stored]
        system, turns = turns_from_messages(rows)
        system = getattr(info, "system", None) or system
        self.conversation = Conversation(system=system, turns=turns)
        self.session_id = info.id if self.saving else None  # history off: new turns are not added to it
        self.session_title = getattr(info, "title", None)
        self.template_name = getattr(info, "template", None)
        name = self.session_title or f"#{info.id}"
        self.notice(f"resumed {name}: {len(turns)} exchange{'s' if len(turns) != 1 else ''}")
        from gptcli import kvstate

        kvstate.restore_session(self.settings, info.id, self.engine, self.notice)
        self.state_unsaved = False
        if show:
            self.show_turns(turns[-SHOWN_ON_RESUME:])

    def show_turns(self, turns: Sequence[Turn]) -> None:
        """Print exchanges as they looked: the user's line, then the reply (Markdown on a terminal)."""
        styled = not self.mode.plain and self.env.styled_output()
        console = self.env.console()
        for turn in turns:
            if styled:
                from rich.markdown import Markdown
                from rich.text import Text

                console.print(Text(PROMPT + turn.user, style="bold"))
                if turn.reply.strip():
                    console.print(Markdown(turn.reply))
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
        self.say(help_text())

    def cmd_exit(self, command: Command) -> bool:
        return False

    def keep_state(self) -> None:
        """Save the model's KV cache for the current session, so `chat -c` need not re-read it.

        Only when a turn was added: leaving a resumed chat untouched does not rewrite its state.
        """
        if not self.state_unsaved:
            return
        from gptcli import kvstate

        kvstate.keep_session(self.settings, self.session_id, self.engine, self.notice)
        self.state_unsaved = False

    def cmd_new(self, command: Command) -> None:
        self.keep_state()
        self.conversation = Conversation(system=self.conversation.system)
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

    def cmd_tokens(self, command: Command) -> None:
        budget = self.conversation.budget(self.engine, self.sampling().max_tokens)
        self.say(budget.describe())

    def cmd_stats(self, command: Command) -> None:
        self.stats = not self.stats
        self.notice(f"status line {'on' if self.stats else 'off'}")

    def cmd_save(self, command: Command) -> None:
        store = self._need_store("/save")
        if not self.saving:
            raise UsageError("/save needs history, which is off (--no-history or history = false)")
        if not self.conversation.turns:
            self.hint("nothing to save yet: send a message first")
            return
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


def run_lines(chat: ChatSession, stream: IO[str]) -> int:
    """Scripts: one turn (or command) per input line, replies as plain text. Returns the exit code."""
    for raw in _lines(stream):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if not chat.handle(line):
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

    Ctrl-J sends too: an Enter typed while a reply streams reaches the prompt as Ctrl-J (the
    terminal turns CR into LF outside raw mode), and it must not become a newline.
    """
    from prompt_toolkit.key_binding import KeyBindings

    bindings = KeyBindings()

    @bindings.add("enter")
    @bindings.add("c-j")
    def _send(event: Any) -> None:
        event.current_buffer.validate_and_handle()

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
        elif name == "export":
            yield from self._paths.get_completions(Document(arg), complete_event)


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
    """The prompt-toolkit session: input history file, suggestions, keys, completion."""
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
    return PromptSession(
        message=FormattedText([("bold", PROMPT)]),
        multiline=True,
        prompt_continuation=lambda width, line_number, wrap_count: CONTINUATION.rjust(width),
        key_bindings=chat_key_bindings(),
        history=history,
        auto_suggest=AutoSuggestFromHistory(),
        completer=completer.adapter,
        complete_while_typing=False,
        enable_history_search=False,
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
        if not interactive:
            return run_lines(chat, env.stdin)
        output = None
        if not env.stdout_isatty:  # `gptcli chat > log`: the prompt goes to the terminal on stderr
            from prompt_toolkit.output import create_output

            output = create_output(stdout=env.stderr)
        return run_interactive(chat, make_prompt_session(chat, output=output))
    finally:
        if chat is not None:
            chat.keep_state()
        if store is not None:
            store.close()
