"""What each slash command does: one function per command, and the table ``ChatSession.run_command`` dispatches on."""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gptcli.chat.attachments import read_attachment
from gptcli.chat.commands import Command, help_text
from gptcli.chat.prompt import PROMPT
from gptcli.conversation import Conversation
from gptcli.engines import Engine, choose
from gptcli.errors import GptcliError, StoreError, UsageError
from gptcli.render import Env
from gptcli.textio import user_path

if TYPE_CHECKING:
    from gptcli.repl import ChatSession

CONTINUE_PROMPT = "Continue exactly where your last reply stopped, without repeating anything."


def cmd_help(chat: ChatSession, command: Command) -> None:
    chat.say(help_text(chat.width() if chat.env.stdout_isatty else 100))


def cmd_exit(chat: ChatSession, command: Command) -> bool:
    return False


def cmd_new(chat: ChatSession, command: Command) -> None:
    chat.keep_state()
    chat.conversation = Conversation(system=chat.conversation.system)
    chat.last_finish = ""
    chat.session_id = None
    chat.session_title = None
    chat.notice("new conversation")


def cmd_clear(chat: ChatSession, command: Command) -> None:
    if chat.env.stdout_isatty:
        chat.env.console().clear()


def cmd_retry(chat: ChatSession, command: Command) -> None:
    last = chat.conversation.pop_turn()
    if last is None:
        chat.hint("nothing to retry yet")
        return
    reply = chat.send(last.user, save=False)
    if reply is None:  # the new reply failed: the old exchange stays
        chat.conversation.turns.append(last)
        return
    if chat.session_id is not None:  # the stored exchange is replaced by the new one
        chat.store_call(lambda: chat.store.drop_last_exchange(chat.session_id))
    chat.save_turn(last.user, reply)


def cmd_undo(chat: ChatSession, command: Command) -> None:
    last = chat.conversation.pop_turn()
    if last is None:
        chat.hint("nothing to undo")
        return
    if chat.session_id is not None:
        chat.store_call(lambda: chat.store.drop_last_exchange(chat.session_id))
    preview = last.user if len(last.user) <= 60 else last.user[:57] + "..."
    chat.notice(f"removed the last exchange ({preview!r})")


def cmd_system(chat: ChatSession, command: Command) -> None:
    if not command.arg:
        chat.say(chat.conversation.system or "(no system prompt: the model's default applies)")
        return
    system = None if command.arg.lower() in ("off", "none", "clear") else command.arg
    chat.set_system(system)
    chat.notice("system prompt removed" if system is None else "system prompt set")


def cmd_template(chat: ChatSession, command: Command) -> None:
    if not command.arg:
        from gptcli.templates import template_names

        names = template_names(usable=True)
        current = f" (in use: {chat.template_name})" if chat.template_name else ""
        chat.say(f"templates{current}: " + ", ".join(names) + "\n/template NAME [KEY=VALUE...] uses one")
        return
    try:
        name, *pairs = shlex.split(command.arg)
    except ValueError as exc:
        raise UsageError(f"/template: {exc} (quote values like tone='very formal')") from None
    chat.use_template(name, pairs)
    shaped = " and replies are JSON that follows its schema (/schema off stops)" if chat.structure_from_template else ""
    chat.notice(f"template '{name}': its system prompt applies from the next message{shaped}")


def cmd_model(chat: ChatSession, command: Command) -> None:
    if not command.arg:
        chat.say(f"{chat.engine.model_name} (context {chat.engine.context_length} tokens)")
        return
    switch_model(chat, command.arg)


def switch_model(chat: ChatSession, spec: str) -> None:
    """Load another model, freeing the current one first; on failure the current one comes back."""
    new_settings = chat.settings.with_flags(model=spec)
    old_settings, old_engine = chat.settings, chat.engine
    released = False
    if choose.engine_kind(new_settings) == "local":
        from gptcli.models import resolve_model

        path = resolve_model(spec).path  # an unknown name fails here, before anything is freed
        if path.is_file():
            chat.keep_state()
            released = _release_local(old_engine)
    try:
        engine = choose.open_engine(new_settings)
    except GptcliError:
        chat.engine = choose.open_engine(old_settings) if released else old_engine
        raise
    chat.settings, chat.engine = new_settings, engine
    if chat.session_id is not None:
        chat.store_call(lambda: chat.store.set_model(chat.session_id, engine.model_name))
    chat.notice(f"now using {engine.model_name} (context {engine.context_length} tokens)")


def cmd_set(chat: ChatSession, command: Command) -> None:
    if command.key is None:
        sampling = chat.sampling()
        shown = {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "repeat_penalty": sampling.repeat_penalty,
            "max_tokens": sampling.max_tokens,
            "seed": "random" if sampling.seed is None else sampling.seed,
            "overflow": chat.overflow,
        }
        chat.say("\n".join(f"  {k} = {v}" for k, v in shown.items()))
        return
    if command.key == "overflow":
        chat.overflow = command.value
    else:
        values, sources = dict(chat.settings.values), dict(chat.settings.sources)
        values[command.key], sources[command.key] = command.value, "flag"
        import dataclasses

        chat.settings = dataclasses.replace(chat.settings, values=values, sources=sources)
    shown_value = "random" if command.key == "seed" and command.value is None else command.value
    chat.notice(f"{command.key} = {shown_value}")


def cmd_schema(chat: ChatSession, command: Command) -> None:
    from gptcli.schema import Structure, dump, parse_schema, schema_grammar

    if not command.arg:
        chat.say(dump(chat.structure.schema, pretty=True) if chat.structure else "(no schema: replies are free text)")
    elif command.arg.lower() in ("off", "none", "clear"):
        chat.structure, chat.structure_from_template = None, False
        chat.notice("schema off: replies are free text")
    else:
        structure = Structure(schema=parse_schema(command.arg))
        if choose.engine_kind(chat.settings) == "local":
            schema_grammar(structure.schema or {})  # a schema the grammar cannot express fails now
        chat.structure, chat.structure_from_template = structure, False
        chat.notice("schema set: replies are JSON that follows it (/schema off stops)")


def cmd_tokens(chat: ChatSession, command: Command) -> None:
    cap = chat.sampling().max_tokens
    chat.say(chat.conversation.budget(chat.engine, cap).describe(cap or chat.engine.context_length))


def cmd_stats(chat: ChatSession, command: Command) -> None:
    choice = command.arg.lower()
    if choice in ("on", "yes", "true", "1"):
        chat.stats = True
    elif choice in ("off", "no", "false", "0"):
        chat.stats = False
    elif not choice:
        chat.stats = not chat.stats
    else:
        raise UsageError(f"/stats takes on or off, not '{command.arg}'")
    chat.notice(f"status line {'on' if chat.stats else 'off'}")


def cmd_continue(chat: ChatSession, command: Command) -> None:
    if not chat.conversation.turns:
        chat.hint("nothing to continue yet")
        return
    last = chat.conversation.turns[-1]
    if chat.last_finish not in ("length", "interrupted") and not last.interrupted:
        chat.hint("the last reply ended by itself: /continue carries on one cut short (the length limit, or Ctrl-C)")
        return
    chat.send(CONTINUE_PROMPT)


def cmd_copy(chat: ChatSession, command: Command) -> None:
    if not chat.conversation.turns:
        chat.hint("nothing to copy yet")
        return
    reply = chat.conversation.turns[-1].reply
    what = "the last reply"
    if command.arg:
        blocks = code_blocks(reply)
        if not command.arg.isdigit() or not 1 <= int(command.arg) <= len(blocks):
            have = f"/copy 1 to /copy {len(blocks)}" if blocks else "it has none"
            raise UsageError(f"the last reply has {len(blocks)} code block{'s' if len(blocks) != 1 else ''}: {have}")
        reply, what = blocks[int(command.arg) - 1], f"code block {command.arg}"
    ways = copy_to_clipboard(reply, chat.env)
    if not ways:
        raise UsageError("no way to reach the clipboard here: not a terminal, and no clipboard tool found")
    chat.notice(f"copied {what} ({len(reply)} characters) via {' and '.join(ways)}")


def cmd_edit(chat: ChatSession, command: Command) -> None:
    from gptcli.editor import edit_text

    text = edit_text(command.arg, on_terminal=chat.env.stdin_isatty and chat.env.stdout_isatty).rstrip("\n")
    if not text.strip():
        chat.hint("nothing sent: the message was left empty")
        return
    chat.say(PROMPT + text)
    chat.handle(text)


def cmd_file(chat: ChatSession, command: Command) -> None:
    name, text = read_attachment(command.arg)
    chat.attachments.append((name, text))
    chat.notice(f"attached {name} ({len(text)} characters): it goes with your next message")


def cmd_save(chat: ChatSession, command: Command) -> None:
    store = chat.need_store("/save")
    if not chat.saving:
        raise UsageError("/save needs history, which is off (--no-history or history = false)")
    if not chat.conversation.turns:
        chat.hint("nothing to save yet: send a message first")
        return
    title = " ".join(command.arg.split())
    try:
        other = store.find_session(title)
    except StoreError:  # no session has this name (or id)
        other = None
    if other is not None and other.id != chat.session_id:
        raise UsageError(
            f"'{title}' already names another conversation ({other.id}, {other.turns} turns): choose another name"
            " (gptcli history lists them)"
        )
    chat.session_title = command.arg
    if chat.ensure_session() is None:
        return
    chat.store_call(lambda: store.rename(chat.session_id, command.arg))
    chat.notice(f"saved as '{command.arg}': resume it with gptcli chat -s {shlex.quote(command.arg)}")


def cmd_sessions(chat: ChatSession, command: Command) -> None:
    store = chat.need_store("/sessions")
    sessions = chat.store_call(lambda: store.list_sessions(limit=20)) or []
    if not sessions:
        chat.say("no saved conversations yet")
        return
    for info in sessions:
        marker = "*" if info.id == chat.session_id else " "
        chat.say(f"{marker} {session_line(info)}")


def cmd_load(chat: ChatSession, command: Command) -> None:
    store = chat.need_store("/load")
    info = store.find_session(command.arg)
    chat.resume(info)


def cmd_export(chat: ChatSession, command: Command) -> None:
    from gptcli.textio import atomic_write

    path = user_path(command.arg)
    text = export_text(chat, as_json=path.suffix.lower() == ".json")
    atomic_write(path, text)
    n = len(chat.conversation.turns)
    chat.notice(f"wrote {n} exchange{'s' if n != 1 else ''} to {path}")


Handler = Callable[["ChatSession", Command], "bool | None"]

HANDLERS: dict[str, Handler] = {
    "help": cmd_help,
    "new": cmd_new,
    "retry": cmd_retry,
    "continue": cmd_continue,
    "undo": cmd_undo,
    "system": cmd_system,
    "template": cmd_template,
    "model": cmd_model,
    "set": cmd_set,
    "schema": cmd_schema,
    "tokens": cmd_tokens,
    "stats": cmd_stats,
    "save": cmd_save,
    "sessions": cmd_sessions,
    "load": cmd_load,
    "export": cmd_export,
    "edit": cmd_edit,
    "file": cmd_file,
    "copy": cmd_copy,
    "clear": cmd_clear,
    "exit": cmd_exit,
}
"""Each command's handler; ``False`` from one means the user leaves."""


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


def _release_local(engine: Engine) -> bool:
    """Free a local model before loading another (two large models may not fit in memory); whether it did."""
    from gptcli.engines import local

    if not isinstance(engine, local.LocalEngine):
        return False
    local.release_engines()
    return True


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


def code_blocks(markdown: str) -> list[str]:
    """The code blocks (fenced or indented) of a Markdown text, in order."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").parse(markdown)
    return [t.content.removesuffix("\n") for t in tokens if t.type in ("fence", "code_block")]
