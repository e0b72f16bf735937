"""The chat's interactive prompt (prompt-toolkit): keys, Tab completion, the input history file, typing while a reply streams."""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gptcli.chat.commands import ALIASES, COMMANDS, SETTABLE
from gptcli.config import data_dir, ensure_private_dir
from gptcli.conversation import POLICIES

if TYPE_CHECKING:
    from gptcli.repl import ChatSession

PROMPT = "› "
CONTINUATION = "· "


def input_history_path() -> Path:
    """The prompt's input history (not the conversation store): a private file in the data folder."""
    path = ensure_private_dir(data_dir()) / "input_history"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    os.close(fd)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path


def chat_key_bindings(edit: Callable[[str], str | None]) -> Any:
    """Enter sends; Alt-Enter (Esc Enter) inserts a newline; pasted text stays whole (bracketed paste).

    In a Ctrl-R search, Enter sends the line found.

    Ctrl-J sends too: an Enter typed while a reply streams reaches the prompt as Ctrl-J (the
    terminal turns CR into LF outside raw mode), and it must not become a newline.

    Ctrl-X Ctrl-E (vi: ``v`` in normal mode) hands the message to ``edit`` (the editor, as ``/edit``
    opens it) and sends what comes back; ``None`` (no editor, or it failed) leaves the message as it was.
    """
    from prompt_toolkit.filters import emacs_mode, has_selection, is_searching, vi_navigation_mode
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

    @bindings.add("c-x", "c-e", filter=emacs_mode & ~has_selection)
    @bindings.add("v", filter=vi_navigation_mode)
    def _edit(event: Any) -> None:
        event.app.create_background_task(edit_and_send(event.current_buffer, edit))

    return bindings


async def edit_and_send(buffer: Any, edit: Callable[[str], str | None]) -> None:
    """Run ``edit`` on the message with the prompt set aside (the editor owns the terminal), then send what it saved."""
    from prompt_toolkit.application import run_in_terminal
    from prompt_toolkit.document import Document

    text = await run_in_terminal(lambda: edit(buffer.text), in_executor=True)
    if text is None:
        return
    text = text.removesuffix("\n")  # editors end the file with a newline; the message does not need it
    buffer.document = Document(text, cursor_position=len(text))
    buffer.validate_and_handle()


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


def model_names() -> list[str]:
    """The names ``/model`` accepts (the embedded model, every alias), then the GGUF files here."""
    from gptcli import models

    return [*models.model_names(), *(str(p) for p in Path.cwd().glob("*.gguf"))]


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

    def templates() -> list[str]:
        from gptcli.templates import template_names

        return template_names(usable=True)  # a broken file cannot be used: not offered

    completer = ChatCompleter(templates, model_names, sessions)

    def edit(text: str) -> str | None:
        from gptcli.editor import edit_text
        from gptcli.errors import GptcliError

        try:
            return edit_text(text, on_terminal=chat.env.stdin_isatty and chat.env.stdout_isatty)
        except GptcliError as exc:
            chat.env.error(str(exc))
            return None

    def continuation(width: int, line_number: int, wrap_count: int) -> str:
        # the marker starts each line of a multi-line message, not each wrapped row of one line
        return CONTINUATION.rjust(width) if wrap_count == 0 else " " * width

    return PromptSession(
        message=FormattedText([("bold", PROMPT)]),
        multiline=True,
        prompt_continuation=continuation,
        key_bindings=chat_key_bindings(edit),
        history=history,
        auto_suggest=AutoSuggestFromHistory(),
        completer=completer.adapter,
        complete_while_typing=False,
        enable_history_search=True,  # Up/Down with text typed recall only lines starting with it
        enable_open_in_editor=False,  # Ctrl-X Ctrl-E (vi: v) is chat_key_bindings', through gptcli.editor as /edit
        vi_mode=bool(chat.settings.vi_mode),
        bottom_toolbar=lambda: chat.gauge(),
        mouse_support=False,
        input=input,
        output=output,
    )


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
