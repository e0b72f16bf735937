"""The Typer application, its global options, and the state every command receives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer

from gptcli import __version__
from gptcli.compat import patch_typer_help
from gptcli.config import Settings, load_settings
from gptcli.errors import ConfigError, UsageError
from gptcli.render import Env

patch_typer_help()


def unwrap_paragraphs(text: str) -> str:
    """A docstring's paragraphs as single lines, so the help page wraps them to the terminal.

    Rich keeps a docstring's line breaks, which then fall mid-sentence on any other width. Lines
    that start a list item (``-``, ``*``) or are indented keep their own line.
    """
    import inspect

    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        lines = paragraph.splitlines()
        out: list[str] = []
        for line in lines:
            if out and not line.startswith((" ", "-", "*", "\t")):
                out[-1] = f"{out[-1]} {line.strip()}"
            else:
                out.append(line)
        paragraphs.append("\n".join(out))
    return "\n\n".join(paragraphs)


def unwrap_help(command: Any) -> None:
    """``unwrap_paragraphs`` on the help of a Click command and every subcommand below it."""
    if getattr(command, "help", None):
        command.help = unwrap_paragraphs(command.help)
    for sub in getattr(command, "commands", {}).values():
        unwrap_help(sub)

app = typer.Typer(
    name="gptcli",
    help="A terminal chat and writing assistant running a local language model.\n\n"
    "Example: gptcli ask \"What is a GGUF file?\"",
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def command_group(name: str, help: str, **options: Any) -> typer.Typer:
    """A group of subcommands (``gptcli NAME ...``), registered on ``app``; its bare name shows its help."""
    group = typer.Typer(help=help, no_args_is_help=True, **options)
    app.add_typer(group, name=name)
    return group


@dataclass
class AppState:
    """What the global options decided, shared by every command through the click context."""

    env: Env = field(default_factory=Env)
    verbose: bool = False
    color_flag: str | None = None  # --color as given on the command line
    json_errors: bool = False  # --json was given: errors are also a JSON event on stdout
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The effective settings, loaded once (a global ``--color`` counts as a flag)."""
        if self._settings is None:
            settings = load_settings()
            if self.color_flag is not None:
                settings = settings.with_flags(color=self.color_flag)
            from gptcli.textio import set_input_limit

            set_input_limit(settings.max_input_mb)
            self._settings = settings
        return self._settings


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def _version(ctx: typer.Context, value: bool) -> None:
    if value:
        print(f"gptcli {__version__}", file=state(ctx).env.stdout)
        raise typer.Exit()


def setup_logging(verbose: bool, env: Env) -> None:
    """llama.cpp's log (logger ``gptcli.llama``) is silent unless --verbose."""
    logger = logging.getLogger("gptcli")
    logger.handlers.clear()
    if verbose:
        handler = logging.StreamHandler(env.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    else:
        logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.ERROR)
    logger.propagate = False


@app.callback()
def root(
    ctx: typer.Context,
    version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show llama.cpp's log and debug details.")] = False,
    color: Annotated[
        Optional[str],
        typer.Option(
            "--color", help="Colour: auto, always or never.", metavar="WHEN", autocompletion=lambda: ["auto", "always", "never"]
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but the answer.")] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="On a terminal, print model and server text as it is (escape sequences run).")
    ] = False,
) -> None:
    st = state(ctx)
    st.verbose = verbose
    if color is not None:
        if color not in ("auto", "always", "never"):
            raise UsageError(f"--color must be auto, always or never, not '{color}'")
        st.color_flag = st.env.color = color
    else:
        try:  # `color` from GPTCLI_COLOR or the config file; a broken file is reported by the command that needs it
            st.env.color = st.settings.color
        except ConfigError:
            pass
    st.env.quiet = st.env.quiet or quiet
    st.env.raw = st.env.raw or raw
    setup_logging(verbose, st.env)
