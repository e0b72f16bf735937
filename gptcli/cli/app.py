"""The Typer application, its global options, and the state every command receives."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Annotated, Any, Optional

import typer

from gptcli import __version__
from gptcli.config import Settings, load_settings
from gptcli.errors import ConfigError, UsageError
from gptcli.render import Env


def _plain_type_labels() -> None:
    """Help labels option values TEXT, INTEGER, FLOAT, as click always did, not ``<str>``.

    Typer 0.28 prints the Python annotation (``--model <str>``); flags show no label.
    """
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    original = getattr(option, "make_metavar", None)
    if original is None or getattr(original, "_gptcli", False):
        return
    import re

    plain = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "list[str]": "TEXT", "list[int]": "INTEGER"}

    def make_metavar(self: Any, *args: Any, **kwargs: Any) -> Any:
        label = original(self, *args, **kwargs)
        if not isinstance(label, str):
            return label
        return re.sub(r"<([a-z\[\]]+)>", lambda m: plain.get(m.group(1), m.group(0)), label)

    make_metavar._gptcli = True  # type: ignore[attr-defined]
    option.make_metavar = make_metavar


_plain_type_labels()

TYPE_LABELS = {"str": "TEXT", "text": "TEXT", "int": "INTEGER", "integer": "INTEGER", "int range": "INTEGER",
               "float": "FLOAT", "float range": "FLOAT", "path": "PATH", "filename": "FILE"}


def _readable_help() -> None:
    """Help pages that read well: one placeholder style, ranges that do not squeeze the text.

    Typer 0.28 writes an argument as ``[prompt]`` or ``{repo}`` in the usage line and ``<str>`` in
    its table, an IntRange as ``<int range> [1<=x<=64]`` (a column so wide that the descriptions
    beside it wrap every few words), and joins an option's names without a space
    (``--temperature,--temp``). Here: ``[PROMPT]`` / ``REPO``, ``TEXT``/``INTEGER``, the range on
    a line of its own, and ``--temperature, --temp``.
    """
    from typer import core
    from typer._click import types

    if getattr(core.TyperArgument.make_metavar, "_gptcli", False):
        return

    def make_metavar(self: Any, ctx: Any, *, usage: bool = False) -> str:
        var = self.metavar or (self.name or "").upper()
        if not usage or var.startswith("["):
            return var
        if self.nargs != 1:
            var += "..."
        return var if self.required else f"[{var}]"

    make_metavar._gptcli = True  # type: ignore[attr-defined]
    core.TyperArgument.make_metavar = make_metavar

    base_metavar = types.ParamType.get_metavar

    def get_metavar(self: Any, param: Any, ctx: Any) -> str | None:
        return base_metavar(self, param, ctx) or TYPE_LABELS.get(str(self.name))

    types.ParamType.get_metavar = get_metavar  # type: ignore[method-assign]

    # Typer imports its Rich help module (35 ms) only to draw a help page: patch it then, not at
    # every command
    for command_class in (core.TyperCommand, core.TyperGroup):
        command_class.format_help = _patching_rich_help(command_class.format_help)  # type: ignore[method-assign]


def _patching_rich_help(format_help: Any) -> Any:
    def patched(self: Any, ctx: Any, formatter: Any) -> Any:
        _patch_rich_utils()
        return format_help(self, ctx, formatter)

    return patched


def _patch_rich_utils() -> None:
    from typer import rich_utils

    if getattr(rich_utils, "_gptcli", False):
        return
    rich_utils._gptcli = True  # type: ignore[attr-defined]
    rich_utils.RANGE_STRING = "\n[{}]"

    class Spaced:
        """An option highlighter given ``--a, --b`` where Typer passes ``--a,--b``."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __call__(self, text: Any) -> Any:
            return self.inner(text.replace(",-", ", -") if isinstance(text, str) else text)

    rich_utils.highlighter = Spaced(rich_utils.highlighter)
    rich_utils.negative_highlighter = Spaced(rich_utils.negative_highlighter)


_readable_help()


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
