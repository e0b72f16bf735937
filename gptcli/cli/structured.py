"""Flags for structured output and batches (``--schema``, ``--grammar``, ``--each-line``), declared once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer

from gptcli.errors import UsageError

if TYPE_CHECKING:
    from gptcli.schema import Structure
    from gptcli.templates import Template

F = TypeVar("F", bound=Callable[..., Any])

PANEL = "Structured output"


@dataclass(frozen=True)
class StructOptions:
    """The structured-output flags of one command line."""

    schema: Optional[str] = None
    grammar: Optional[str] = None
    each_line: bool = False
    parallel: Optional[int] = None

    def structure(self, template: Template | None = None) -> Structure | None:
        """What replies must be: ``--schema``, else ``--grammar``, else the template's schema, else free text."""
        if self.schema is not None and self.grammar is not None:
            raise UsageError("use --schema or --grammar, not both")
        if self.parallel is not None and not self.each_line:
            raise UsageError("--parallel runs several lines at once: use it with --each-line")
        if self.parallel is not None and self.parallel < 1:
            raise UsageError("--parallel takes a number of replies at once (1 or more)")
        from gptcli.schema import Structure, check_schema, load_grammar, parse_schema

        if self.schema is not None:
            return Structure(schema=parse_schema(self.schema))
        if self.grammar is not None:
            return Structure(grammar=load_grammar(self.grammar))
        if template is not None and template.schema is not None:
            check_schema(template.schema)
            return Structure(schema=template.schema)
        return None


SchemaOption = Annotated[
    Optional[str],
    typer.Option(
        "--schema",
        help="Reply with JSON that follows this JSON Schema: a file, inline JSON, or 'name, age int, bio: a short bio'.",
        rich_help_panel=PANEL,
        metavar="SCHEMA",
    ),
]

_OPTIONS: dict[str, Any] = {
    "schema": SchemaOption,
    "grammar": Annotated[Optional[str], typer.Option("--grammar", help="Constrain the reply with a GBNF grammar file (local engine).", rich_help_panel=PANEL, metavar="FILE.gbnf")],
    "each_line": Annotated[bool, typer.Option("--each-line", help="Run once per input line (or JSON Lines record); one JSON value per output line.", rich_help_panel=PANEL)],
    "parallel": Annotated[Optional[int], typer.Option("--parallel", help="With --each-line: replies generated at once (default: what suits the engine).", rich_help_panel=PANEL, metavar="N")],
}


def structured_options(func: F) -> F:
    """Add the structured-output flags to a command; it receives them as ``structured: StructOptions``."""
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.name != "structured"]
    names = [f.name for f in fields(StructOptions)]
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=StructOptions.__dataclass_fields__[name].default, annotation=_OPTIONS[name])
        for name in names
    ]
    # keyword-only parameters must come after the others, ``**kwargs`` last
    head = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
    tail = [p for p in own if p.kind is inspect.Parameter.VAR_KEYWORD]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        structured = StructOptions(**{name: kwargs.pop(name) for name in names if name in kwargs})
        return func(*args, structured=structured, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=head + extra + tail)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in func.__annotations__.items() if k != "structured"}, **{n: _OPTIONS[n] for n in names}}
    return wrapper  # type: ignore[return-value]
