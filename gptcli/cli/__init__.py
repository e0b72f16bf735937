"""Command layer: parse flags, call the pieces, map errors to one stderr line and an exit code."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
from typing import Any

import typer

# importing a command module registers its commands on `app`
from gptcli.cli import (  # noqa: F401
    chat,
    config_cmd,
    history,
    models_cmd,
    oneshot,
    serve,
    templates_cmd,
    translate_cmd,
    writing,
)
from gptcli.cli.app import AppState, app, unwrap_help
from gptcli.cli.completion import named_shell_completion
from gptcli.compat import click_exceptions as _click_exceptions
from gptcli.compat import use_first_tab_zsh_script
from gptcli.errors import GptcliError, ReplyCut, Terminated
from gptcli.render import Env, OutputClosed, OutputFailed

click_exceptions = _click_exceptions()  # Typer ships its own copy of Click

__all__ = ["app", "main", "run"]


def wants_json(argv: list[str]) -> bool:
    """``--json`` among the options (before a ``--`` that ends them)."""
    options = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in options


def _error_event(env: Env, message: str, exit_code: int) -> None:
    """With ``--json``, an error is also a JSON line on stdout, so a script reading it sees why."""
    from gptcli.render import write_event

    with contextlib.suppress(OutputClosed, OutputFailed, ValueError):  # ValueError: stdout was closed
        write_event(env.stdout, {"type": "error", "message": message, "exit_code": exit_code})


def _show_usage_error(env: Env, exc: Any) -> None:  # a Click UsageError (Typer's copy)
    """The usage line, where to find help, then the one ``error:`` line."""
    ctx = exc.ctx
    if ctx is not None:
        hint = ""
        if ctx.command.get_help_option(ctx) is not None:
            hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.\n"
        env.stderr.write(f"{ctx.get_usage()}\n{hint}\n")
    env.error(exc.format_message())


def run(argv: list[str] | None = None, env: Env | None = None) -> int:
    """Run the CLI and return its exit code (tests call this with their own ``Env``)."""
    env = env or Env()
    args = list(sys.argv[1:] if argv is None else argv)
    st = AppState(env=env, json_errors=wants_json(args))
    use_first_tab_zsh_script()
    command = typer.main.get_command(app)
    unwrap_help(command)

    def fail(message: str, code: int) -> int:
        if st.json_errors:
            _error_event(env, message, code)
        return code

    def unexpected(exc: BaseException) -> int:
        message = unexpected_error_message(exc)
        if st.verbose:
            import traceback

            env.stderr.write("".join(traceback.format_exception(exc)))
        env.error(message)
        return fail(message, 1)

    try:
        named = named_shell_completion(args, env.stdout)
        if named is not None:
            return named
        try:
            result = command.main(args=args, prog_name="gptcli", standalone_mode=False, obj=st)
        except ReplyCut as cut:  # a command with no history to keep the partial reply in: the failure is what counts
            raise cut.cause from None
        with contextlib.suppress(ValueError):  # a closed stream: nothing to flush
            env.stdout.flush()  # a full disk under `> /dev/full` shows here at the latest
        return result if isinstance(result, int) else 0
    except OutputFailed as exc:
        env.error(str(exc))
        _silence_stdout()
        return exc.exit_code
    except GptcliError as exc:
        env.error(str(exc))
        return fail(str(exc), exc.exit_code)
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, and keep Python from complaining at exit
        _silence_stdout()
        return 0
    except OSError as exc:
        if not _stdout_fails(env, exc):
            return unexpected(exc)
        env.error(f"cannot write to standard output: {exc.strerror or exc}")  # `> /dev/full`
        _silence_stdout()
        return 1
    except typer.Exit as exc:
        return exc.exit_code
    except click_exceptions.NoArgsIsHelpError as exc:
        env.stdout.write(exc.format_message())  # `gptcli` alone, `gptcli models`: the help (Rich printed it already)
        return int(exc.exit_code)  # 2, as in Typer and Click
    except click_exceptions.UsageError as exc:
        _show_usage_error(env, exc)
        return fail(exc.format_message(), exc.exit_code)
    except click_exceptions.ClickException as exc:
        env.error(exc.format_message())
        return fail(exc.format_message(), exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        env.stderr.write("\n")
        return fail("interrupted", 130)
    except OutputClosed:
        _silence_stdout()
        return 0
    except Exception as exc:  # noqa: BLE001 - the last net: one line, never a traceback a user must read
        return unexpected(exc)


def unexpected_error_message(exc: BaseException) -> str:
    """One line for an error no piece turned into a ``GptcliError``: what failed, on which file.

    An ``OSError`` (a folder that cannot be written, a full disk) names the file and the reason as
    the system gives it; anything else is a bug, said so, with a pointer to ``--verbose``.
    """
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        hint = ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = ": free some space and try again"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = ": check the folder's permissions (GPTCLI_HOME moves gptcli's files elsewhere)"
        subject = f"{exc.filename}: " if exc.filename else ""
        return f"{subject}{reason}{hint}"
    return f"unexpected error: {type(exc).__name__}: {exc} (run again with --verbose for the details)"


def _stdout_fails(env: Env, exc: OSError) -> bool:
    """Whether standard output is what failed (a full device), not some file a command wrote.

    Files gptcli writes report their own errors (``InputError``), so a disk-full error reaching
    here with stdout on a device, or on a file system with no room left, is stdout's.
    """
    try:
        env.stdout.flush()
    except (OSError, ValueError):
        return True
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO):
        return False
    try:
        fd = env.stdout.fileno()
        mode = os.fstat(fd).st_mode
        return stat.S_ISCHR(mode) or (stat.S_ISREG(mode) and os.fstatvfs(fd).f_bavail == 0)
    except (OSError, ValueError, AttributeError):
        return False


def _silence_stdout() -> None:
    """Point the process's stdout at /dev/null, so Python's flush at exit has nothing to complain about."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


TERMINATED_EXIT_CODE = 143  # 128 + SIGTERM, as a shell reports a process the signal ended


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM stops gptcli the way Ctrl-C does: the partial reply is saved, files are left whole."""
    Terminated.received = True
    raise Terminated


def main() -> None:
    """Console-script entry point."""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread, or no SIGTERM here
        pass
    code = run()
    sys.exit(TERMINATED_EXIT_CODE if Terminated.received else code)
