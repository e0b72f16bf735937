"""The ``chat`` command: an interactive conversation with the model kept loaded between turns."""

from typing import Annotated, Optional

import typer

from gptcli.cli.app import app, state
from gptcli.cli.completion import complete_session, complete_template
from gptcli.cli.options import GenOptions, generation_options
from gptcli.cli.run import output_mode
from gptcli.cli.structured import SchemaOption


@app.command()
@generation_options
def chat(
    ctx: typer.Context,
    continue_last: Annotated[bool, typer.Option("--continue", "-c", help="Resume the most recent conversation.")] = False,
    session: Annotated[Optional[str], typer.Option("--session", "-s", help="Resume the conversation with this name or id.", autocompletion=complete_session)] = None,
    template: Annotated[Optional[str], typer.Option("--template", "-t", help="Start with this template's system prompt.", autocompletion=complete_template)] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value (repeatable).", metavar="KEY=VALUE")] = None,
    system: Annotated[Optional[str], typer.Option("--system", help="Start with this system prompt.")] = None,
    commands: Annotated[
        bool, typer.Option("--commands", help="Piped input: run lines starting with / as slash commands (off: every line is a message).")
    ] = False,
    schema: SchemaOption = None,
    gen: GenOptions = GenOptions(),
) -> None:
    """Chat with the model: a REPL with history, slash commands (/help) and Markdown replies.

    Piped input is read one turn per line and answered in plain text; a line starting with /
    is a message too, unless --commands is given.

    Example: gptcli chat -t translate -v target=German
    """
    from gptcli.repl import ChatRequest, run_chat

    if continue_last and session:
        raise typer.BadParameter("use either --continue or --session, not both", param_hint="--continue")
    st = state(ctx)
    if schema is not None:  # a bad schema fails before the model loads
        from gptcli.schema import parse_schema

        parse_schema(schema)
    if var and not template:
        raise typer.BadParameter("-v sets a template's variables: use it with -t TEMPLATE", param_hint="--var")
    request = ChatRequest(
        continue_last=continue_last, session=session, template=template, template_vars=tuple(var or ()), system=system,
        commands=commands,
        schema=schema,
    )
    settings = gen.settings(st.settings)
    raise typer.Exit(run_chat(settings, st.env, request, output_mode(gen, settings)))
