"""One-shot commands: ``ask`` and ``draft`` make the trip once."""

from typing import Annotated, Optional

import typer

from gptcli.cli.app import app, state
from gptcli.cli.completion import complete_template
from gptcli.cli.options import ContinueOption, GenOptions, SessionOption, generation_options
from gptcli.cli.run import run_template
from gptcli.cli.structured import StructOptions, structured_options


@app.command()
@generation_options
@structured_options
def ask(
    ctx: typer.Context,
    prompt: Annotated[Optional[str], typer.Argument(help="The question. Piped text becomes the material it is about.")] = None,
    template: Annotated[Optional[str], typer.Option("--template", "-t", help="Prompt template to use.", autocompletion=complete_template)] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value (repeatable).", metavar="KEY=VALUE")] = None,
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="Read the material from a file.")] = None,
    continue_: ContinueOption = False,
    session: SessionOption = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Ask a question and stream the answer.

    Example: cat notes.txt | gptcli ask "summarize this"

    JSON that follows a schema: gptcli ask "a haiku" --schema 'title, lines: the three lines'
    """
    raise typer.Exit(
        run_template(
            state(ctx), template or "ask", gen, prompt=prompt, file=file, var=var, continue_=continue_, session=session,
            structured=structured,
        )
    )


@app.command()
@generation_options
@structured_options
def draft(
    ctx: typer.Context,
    instructions: Annotated[Optional[str], typer.Argument(help="Optional instructions (\"an email to the team\").")] = None,
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="Read the notes from a file instead of stdin.")] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value: kind, tone, length, audience.", metavar="KEY=VALUE")] = None,
    continue_: ContinueOption = False,
    session: SessionOption = None,
    gen: GenOptions = GenOptions(),
    structured: StructOptions = StructOptions(),
) -> None:
    """Turn rough notes (stdin or --file) into a finished draft.

    Example: cat notes.txt | gptcli draft "an email to the team" -v tone=formal
    """
    raise typer.Exit(
        run_template(
            state(ctx),
            "draft",
            gen,
            file=file,
            var=var,
            instructions=instructions,
            input_from_prompt=False,
            continue_=continue_,
            session=session,
            structured=structured,
        )
    )
