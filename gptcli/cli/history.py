"""``gptcli history``: list, show, search, export, rename and delete saved conversations."""

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gptcli.cli.app import command_group, state
from gptcli.cli.completion import complete_session
from gptcli.errors import InputError, UsageError
from gptcli.render import Column, Env, write_json, write_table, write_text
from gptcli.textio import plural

if TYPE_CHECKING:
    from gptcli.store import ConversationStore, SessionInfo

history_app = command_group(
    "history",
    "Saved conversations: list, show, search, export, rename and delete them.\n\n"
    "Example: gptcli history search \"docker compose\"",
)

IdArgument = Annotated[str, typer.Argument(help="Session id, the start of one (4+ characters), or its exact title.", metavar="ID", autocompletion=complete_session)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _open() -> "ConversationStore":
    from gptcli.store import ConversationStore

    return ConversationStore.open()


def _when(timestamp: float) -> str:
    """Local date and time, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


def _model_label(model: Optional[str]) -> str:
    return Path(model).name if model and ("/" in model and model.endswith(".gguf")) else (model or "-")



@history_app.command("list")
def list_sessions(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many sessions to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List saved conversations, newest first: id, time, turns, model, title.

    Example: gptcli history list --limit 5
    """
    env = state(ctx).env
    with _open() as store:
        sessions = store.list_sessions(limit)
    if as_json:
        write_json(env.stdout, [s.as_dict() for s in sessions])
        return
    if not sessions:
        env.notice("no saved conversations yet")
        return
    columns = [
        Column("ID", wrap=False),
        Column("UPDATED", wrap=False),
        Column("TURNS", wrap=False),
        Column("MODEL", wrap=False),
        Column("TITLE"),
    ]
    rows = [[s.id, _when(s.updated), plural(s.turns, "turn"), _model_label(s.model), s.title or "(untitled)"] for s in sessions]
    write_table(env, columns, rows, headings_on_pipe=False)  # a pipe gets the rows alone, for cut and awk


@history_app.command("show")
def show(ctx: typer.Context, session: IdArgument, as_json: JsonOption = False) -> None:
    """Show a whole conversation: Markdown on a terminal, plain text on a pipe.

    Example: gptcli history show k3v9a1nh
    """
    from gptcli.store import export_json, export_markdown

    env = state(ctx).env
    with _open() as store:
        info = store.find_session(session)
        messages = store.messages(info.id)
    if as_json:
        write_text(env, export_json(info, messages))
        return
    text = export_markdown(info, messages)
    if env.stdout_isatty and not env.raw:  # stored replies may hold a model's escape sequences
        from gptcli.textio import sanitize_terminal

        text = sanitize_terminal(text)
    if env.styled_output():
        from rich.markdown import Markdown

        env.console().print(Markdown(text))
    else:
        write_text(env, text)


@history_app.command("search")
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Words that must all appear; end a word with * to match its start.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Most sessions to show.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Full-text search of every saved message, best match first, one line per conversation.

    Example: gptcli history search "docker compose"
    """
    env = state(ctx).env
    if not query.strip():
        raise UsageError("give some words to search for")
    with _open() as store:
        hits = store.search(query, limit)
    if as_json:
        write_json(env.stdout, [h.as_dict() for h in hits])
        return
    if not hits:
        env.notice(f"nothing in the history matches '{query}'")
        raise typer.Exit(1)
    if env.styled_output():
        from rich.text import Text

        console = env.console()
        for hit in hits:
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(hit.session_id, style="cyan")
            line.append(f"  {_when(hit.created)}  ", style="dim")
            line.append(hit.title or "(untitled)", style="bold")
            line.append(": ")
            for piece, matched in hit.spans():
                line.append(_one_line(piece), style="bold yellow" if matched else "")
            console.print(line)
        return
    # a pipe: one line per conversation, the snippet without highlight markers (grep and cut read it)
    lines = [f"{h.session_id}  {_when(h.created)}  {h.title or '(untitled)'}: {_one_line(h.marked('', ''))}" for h in hits]
    write_text(env, "\n".join(lines) + "\n")


def _one_line(text: str) -> str:
    """A snippet's line breaks and runs of spaces as single spaces."""
    return re.sub(r"\s+", " ", text)


@history_app.command("export")
def export(
    ctx: typer.Context,
    session: IdArgument,
    fmt: Annotated[str, typer.Option("--format", "-F", help="md (Markdown) or json.", metavar="md|json")] = "md",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file (atomically, mode 0600) instead of stdout.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --output file.")] = False,
) -> None:
    """Export a conversation as Markdown or JSON, to stdout or a file (private: mode 0600).

    Example: gptcli history export k3v9a1nh --format json -o chat.json
    """
    from gptcli.store import export_json, export_markdown
    from gptcli.textio import atomic_write

    if fmt not in ("md", "json"):
        raise UsageError(f"--format must be md or json, not '{fmt}'")
    env = state(ctx).env
    writing = output is not None and str(output) != "-"
    if writing and os.path.lexists(output) and not force:  # type: ignore[arg-type]
        raise InputError(f"{output} already exists: use --force to replace it")
    with _open() as store:
        info = store.find_session(session)
        messages = store.messages(info.id)
    text = export_json(info, messages) if fmt == "json" else export_markdown(info, messages)
    if output is None or str(output) == "-":
        write_text(env, text)
        return
    atomic_write(output, text, mode=0o600)  # a conversation is as private as the history it comes from
    env.notice(f"wrote {output}")


@history_app.command("rm")
def remove(
    ctx: typer.Context,
    session: IdArgument,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
) -> None:
    """Delete a conversation and all its messages (asks first unless --yes).

    Example: gptcli history rm k3v9a1nh --yes
    """
    env = state(ctx).env
    with _open() as store:
        info = store.find_session(session)
        if not yes and not _confirm(env, info):
            env.notice("kept: nothing deleted")
            raise typer.Exit(1)
        store.delete(info.id)
    from gptcli import kvstate, sessionlock

    kvstate.forget_session(info.id)  # the model state saved with it is derived from its text
    sessionlock.forget(info.id)
    env.notice(f"deleted {info.id} ({info.title or 'untitled'})")


def _confirm(env: Env, info: "SessionInfo") -> bool:
    """Ask on stderr, read the answer from stdin; no answer (end of input) means no."""
    turns = f"{info.turns} turn{'s' if info.turns != 1 else ''}"
    env.stderr.write(f"Delete '{info.title or 'untitled'}' ({info.id}, {turns})? [y/N] ")
    env.stderr.flush()
    answer = env.stdin.readline()
    if not answer.endswith("\n"):
        env.stderr.write("\n")
    return answer.strip().lower() in ("y", "yes")


@history_app.command("rename")
def rename(
    ctx: typer.Context,
    session: IdArgument,
    name: Annotated[str, typer.Argument(help="The new title.")],
) -> None:
    """Give a conversation a new title (then `-s TITLE` finds it).

    Example: gptcli history rename k3v9a1nh "trip planning"
    """
    env = state(ctx).env
    with _open() as store:
        info = store.find_session(session)
        store.rename(info.id, name)
    env.notice(f"renamed {info.id}: {' '.join(name.split())}")


@history_app.command("path")
def path(ctx: typer.Context) -> None:
    """Print where the history database is (it may not exist yet).

    Example: sqlite3 "$(gptcli history path)" .tables
    """
    from gptcli.store import default_store_path

    write_text(state(ctx).env, f"{default_store_path()}\n")
