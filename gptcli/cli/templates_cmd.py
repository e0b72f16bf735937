"""``gptcli templates``: list, show, render, create and edit prompt templates."""

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from gptcli.cli.app import AppState, command_group, state
from gptcli.cli.completion import complete_template
from gptcli.errors import TemplateError, UsageError
from gptcli.render import write_columns, write_json

templates_app = command_group(
    "templates",
    "Prompt templates: the shipped ones and your own (in the config folder's templates/).\n\n"
    "Example: gptcli templates new standup",
)


NameArgument = Annotated[str, typer.Argument(help="Template name.", autocompletion=complete_template)]


def _source_label(entry: Any) -> str:
    return f"{entry.source} (overrides built-in)" if entry.overrides else entry.source


@templates_app.command("list")
def list_templates(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array: name, description, source, path, variables.")] = False,
) -> None:
    """List the templates: name, where it comes from (built-in or user), description.

    Example: gptcli templates list --json
    """
    from gptcli.templates import TemplateLibrary

    st = state(ctx)
    library = TemplateLibrary.load()
    entries = [library.entries[name] for name in library.names()]
    if as_json:
        records: list[dict[str, Any]] = []
        for entry in entries:
            record: dict[str, Any] = {
                "name": entry.name,
                "description": entry.description,
                "source": entry.source,
                "overrides_builtin": entry.overrides,
                "path": str(entry.path),
            }
            if entry.template is not None:
                record["variables"] = [
                    {"name": v.name, "description": v.description, "default": v.default, "required": v.required}
                    for v in entry.template.variables
                ]
            else:
                record["error"] = str(entry.error)
            records.append(record)
        write_json(st.env.stdout, records)
        return
    rows = [("NAME", "SOURCE", "DESCRIPTION")]
    for entry in entries:
        description = entry.description if entry.template else "BROKEN: see the error below"
        rows.append((entry.name, _source_label(entry), description))
    write_columns(st.env, rows)
    for entry in entries:
        if entry.error is not None:
            st.env.error(str(entry.error))


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.strip("\n").splitlines())


@templates_app.command()
def show(
    ctx: typer.Context,
    name: NameArgument,
    raw: Annotated[bool, typer.Option("--raw", help="Print the TOML file as it is.")] = False,
) -> None:
    """Show a template: source, file, variables with defaults, sampling, prompts, examples.

    Example: gptcli templates show support
    """
    from gptcli.templates import TemplateLibrary, read_template_file

    st = state(ctx)
    library = TemplateLibrary.load()
    entry = library.entries.get(name)
    if raw and entry is not None:
        st.env.stdout.write(read_template_file(entry.path))  # a FIFO or a huge file is an error, not a hang
        return
    template = library.get(name)
    out: list[str] = [f"{template.name} ({_source_label(library.entries[name])}): {template.path}"]
    if template.description:
        out.append(template.description)
    out.append("")
    if template.variables:
        out.append("Variables (-v NAME=VALUE):")
        width = max(len(v.name) for v in template.variables)
        for v in template.variables:
            default = "required" if v.required else f"default: {v.default!r}"
            desc = f"{v.description}; " if v.description else ""
            out.append(f"  {v.name:<{width}}  {desc}{default}")
    else:
        out.append("Variables: none")
    sampling = []
    if template.temperature is not None:
        sampling.append(f"temperature {template.temperature:g}")
    if template.max_tokens is not None:
        sampling.append(f"max tokens {template.max_tokens}")
    if sampling:
        out.append("Sampling defaults: " + ", ".join(sampling))
    if not template.input_required:
        out.append("Input: optional")
    if template.system.strip():
        out += ["", "System prompt:", _indent(template.system)]
    out += ["", "User prompt:", _indent(template.user)]
    if template.schema is not None:  # replies are JSON following it (see `--schema`)
        import json

        out += ["", "Reply schema (JSON):", _indent(json.dumps(template.schema, indent=2, ensure_ascii=False))]
    for i, example in enumerate(template.examples, 1):
        out += ["", f"Example {i} ({example['role']}):", _indent(example["content"])]
    st.env.stdout.write("\n".join(out) + "\n")


@templates_app.command()
def render(
    ctx: typer.Context,
    name: NameArgument,
    text: Annotated[Optional[str], typer.Argument(help="The input text (or pipe it in).")] = None,
    var: Annotated[Optional[list[str]], typer.Option("--var", "-v", help="Template variable key=value (repeatable).", metavar="KEY=VALUE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The messages as a JSON array.")] = False,
) -> None:
    """Print the messages a template makes from an input, without running a model.

    Example: echo "Hello" | gptcli templates render rewrite -v goal=shorter
    """
    from gptcli.cli.run import read_material
    from gptcli.templates import load_template, parse_vars

    st = state(ctx)
    template = load_template(name)
    values = parse_vars(var)
    template.values(values)
    material = read_material(st, None)
    parts = [p for p in (text, material) if p and p.strip()]
    messages = template.render("\n\n".join(parts), values)
    if as_json:
        write_json(st.env.stdout, messages)
        return
    blocks = [f"--- {m['role']} ---\n{m['content']}" for m in messages]
    st.env.stdout.write("\n\n".join(blocks) + "\n")


def _open_editor(st: AppState, path: Path) -> bool:
    """Open ``path`` in $VISUAL or $EDITOR (vi on a terminal when neither is set). False: no editor."""
    from gptcli.editor import edit_file, editor_command

    command = editor_command(st.env.stdin_isatty and st.env.stdout_isatty)
    if command is None:
        st.env.notice(f"set $EDITOR to open templates in your editor; the file is {path}")
        return False
    edit_file(command, path)
    return True


def _check(path: Path, name: str) -> None:
    """Validate a user template after editing: an error names the file, which is kept for fixing."""
    from gptcli.templates import USER, parse_template

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"{path}: not UTF-8 text") from None
    try:
        parse_template(name, text, source=USER, path=path)
    except TemplateError as exc:
        raise TemplateError(f"{exc} (fix it with `gptcli templates edit {name}`)") from None


@templates_app.command()
def new(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new template (letters, digits, - and _).")],
    no_edit: Annotated[bool, typer.Option("--no-edit", help="Write the scaffold without opening an editor.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing user template, or shadow a built-in.")] = False,
) -> None:
    """Create a template from a commented scaffold in your templates folder and open it in $EDITOR.

    Example: gptcli templates new standup
    """
    from gptcli.config import ensure_private_dir
    from gptcli.templates import BUILTIN, TemplateLibrary, scaffold, user_dir, valid_template_name
    from gptcli.textio import atomic_write

    st = state(ctx)
    if not valid_template_name(name):
        raise UsageError(f"'{name}' is not a template name: use letters, digits, - and _ (up to 64)")
    path = user_dir() / f"{name}.toml"
    if path.exists() and not force:
        raise TemplateError(f"template '{name}' already exists at {path}: edit it with `gptcli templates edit {name}`")
    existing = TemplateLibrary.load().entries.get(name)
    if existing is not None and existing.source == BUILTIN and not force:
        raise TemplateError(
            f"'{name}' is a built-in template: `gptcli templates edit {name}` changes a copy of it"
            " (or pass --force to start from a blank scaffold)"
        )
    ensure_private_dir(user_dir())
    atomic_write(path, scaffold(name))
    st.env.notice(f"created {path}")
    if not no_edit and _open_editor(st, path):
        _check(path, name)


@templates_app.command()
def edit(ctx: typer.Context, name: NameArgument) -> None:
    """Open a template in $EDITOR; a built-in is first copied to your templates folder.

    Example: gptcli templates edit support
    """
    from gptcli.config import ensure_private_dir
    from gptcli.templates import BUILTIN, TemplateLibrary, builtin_dir, template_names, user_dir, valid_template_name
    from gptcli.textio import atomic_write_bytes

    st = state(ctx)
    if not valid_template_name(name):
        raise UsageError(f"'{name}' is not a template name: use letters, digits, - and _")
    path = user_dir() / f"{name}.toml"
    if not path.exists():
        library = TemplateLibrary.load([(builtin_dir(), BUILTIN)])
        entry = library.entries.get(name)
        if entry is None:
            known = ", ".join(template_names()) or "none"
            raise TemplateError(f"unknown template '{name}' (templates: {known}); create it with `gptcli templates new {name}`")
        ensure_private_dir(user_dir())
        atomic_write_bytes(path, entry.path.read_bytes())  # a full disk leaves no empty copy behind
        st.env.notice(f"copied the built-in '{name}' to {path}; your copy overrides it")
    if _open_editor(st, path):
        _check(path, name)


@templates_app.command()
def path(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="A template: print the file in use for it.", autocompletion=complete_template)] = None,
    builtin: Annotated[bool, typer.Option("--builtin", help="Print the folder of the shipped templates.")] = False,
) -> None:
    """Print your templates folder, the built-in folder, or the file a template comes from.

    Example: ls "$(gptcli templates path)"
    """
    from gptcli.templates import TemplateLibrary, builtin_dir, user_dir

    st = state(ctx)
    if name is not None:
        entry = TemplateLibrary.load().entries.get(name)
        if entry is None:
            raise TemplateError(f"unknown template '{name}' (see `gptcli templates list`)")
        result = entry.path
    else:
        result = builtin_dir() if builtin else user_dir()
    st.env.stdout.write(f"{result}\n")
