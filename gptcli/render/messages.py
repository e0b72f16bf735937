"""What the chat shows besides replies: notices a command asked for, hints, past exchanges."""

from __future__ import annotations

from collections.abc import Sequence

from gptcli.render.env import Env, OutputClosed, wrap_words
from gptcli.render.markdown import reply_markdown
from gptcli.render.writers import write_event


def say(env: Env, text: str, *, json_events: bool = False) -> None:
    """What a command was asked to show, on stdout, wrapped at words on a terminal (an ``info``
    event with ``--json``). A closed stdout raises ``OutputClosed``."""
    if json_events:
        write_event(env.stdout, {"type": "info", "text": text})
        return
    if env.stdout_isatty:  # a terminal breaks words; wrap them whole
        text = wrap_words(text, env.console().width)
    try:
        print(text, file=env.stdout, flush=True)
    except BrokenPipeError:
        raise OutputClosed from None


def hint(env: Env, text: str) -> None:
    """A one-line hint answering what was typed (an unknown command, nothing to undo): dim, on
    stderr, wrapped at words on a terminal; silent with ``--quiet``, as notices are."""
    console = env.err_console
    if env.stderr_isatty:
        text = wrap_words(text, console.width)
    console.print(text, style="dim", markup=False, highlight=False, soft_wrap=True)


def show_exchanges(env: Env, exchanges: Sequence[tuple[str, str, bool]], *, prompt: str, plain: bool, json_events: bool = False) -> None:
    """Stored (user, reply, interrupted) exchanges as they looked: ``prompt`` and the user's text,
    then the reply, Markdown when stdout is styled and ``plain`` is off."""
    if env.stdout_isatty and not env.raw:  # stored replies may hold a model's escape sequences
        from gptcli.textio import sanitize_terminal

        exchanges = [(sanitize_terminal(user), sanitize_terminal(reply), cut) for user, reply, cut in exchanges]
    if plain or not env.styled_output():
        for user, reply, cut in exchanges:
            say(env, prompt + user, json_events=json_events)
            say(env, reply + (" (interrupted)" if cut else ""), json_events=json_events)
        return
    from rich.text import Text

    console = env.console()
    for user, reply, cut in exchanges:
        console.print(Text(prompt + user, style="bold"))
        if reply.strip():
            console.print(reply_markdown(reply))
        if cut:
            console.print(Text("(interrupted)", style="dim"))
