"""Command layer: parse flags, call the pieces, map errors to one stderr line and an exit code."""

from __future__ import annotations

import os
import sys

import click
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
from gptcli.cli.app import AppState, app
from gptcli.errors import GptcliError
from gptcli.render import Env, OutputClosed

__all__ = ["app", "main", "run"]


def run(argv: list[str] | None = None, env: Env | None = None) -> int:
    """Run the CLI and return its exit code (tests call this with their own ``Env``)."""
    env = env or Env()
    command = typer.main.get_command(app)
    try:
        result = command.main(
            args=argv, prog_name="gptcli", standalone_mode=False, obj=AppState(env=env)
        )
        return result if isinstance(result, int) else 0
    except GptcliError as exc:
        env.error(str(exc))
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        env.stderr.write("\n")
        return 130
    except click.ClickException as exc:
        exc.show(file=env.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        env.stderr.write("\n")
        return 130
    except (OutputClosed, BrokenPipeError):
        # the reader went away (`| head`): stop quietly, and keep Python from complaining at exit
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
