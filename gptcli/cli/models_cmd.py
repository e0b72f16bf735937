"""`gptcli models ...` (pull, list, info, default, add, rm) and `gptcli doctor`."""

import json
from typing import Annotated, Optional

import typer

from gptcli.cli.app import AppState, app, command_group, state
from gptcli.cli.completion import complete_model
from gptcli.errors import ConfigError, UsageError
from gptcli.textio import plural
from gptcli.render import write_columns, write_json, write_text

models_app = command_group(
    "models",
    "Get, list, inspect and remove GGUF models (Hugging Face Hub pulls, local files).\n\n"
    "Example: gptcli models pull bartowski/SmolLM2-360M-Instruct-GGUF --quant Q4_K_M",
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _size(n: int) -> str:
    from gptcli.hub import format_size

    return format_size(n) if n else "-"



def _model_setting(st: AppState) -> Optional[str]:
    """The `model` setting (env, config): the default model when no --model is given."""
    try:
        model: str | None = st.settings.model
        return model
    except ConfigError:
        return None


@models_app.command("pull")
def pull(
    ctx: typer.Context,
    repo: Annotated[str, typer.Argument(help="Hub repository, OWNER/NAME (a '-GGUF' repository), or a recommended model's short name: smollm2-360m, qwen2.5-1.5b, llama3.2-3b, qwen2.5-7b.")],
    file: Annotated[Optional[str], typer.Option("--file", "-f", help="Exact GGUF file in the repository.")] = None,
    quant: Annotated[Optional[str], typer.Option("--quant", help="Quantization to pick: Q4_K_M, Q5_K_M, Q8_0, ...")] = None,
    alias: Annotated[Optional[str], typer.Option("--alias", "-a", help="Name to use with --model.")] = None,
    revision: Annotated[str, typer.Option("--revision", help="Branch, tag or commit.")] = "main",
    offline: Annotated[bool, typer.Option("--offline", help="Make no request (pull then fails clearly).")] = False,
) -> None:
    """Download a GGUF model from the Hugging Face Hub into its cache and register it.

    Without --file or --quant the file is chosen by quantization (Q4_K_M first); split models
    (-00001-of-0000N.gguf) download every part. A cut-off download resumes on the next pull.

    A recommended model's short name pulls its repository and registers it under that name (the
    README lists them with the memory they need).

    Example: gptcli models pull qwen2.5-1.5b
    """
    from gptcli.models import pull_model

    st = state(ctx)
    bar_stream = st.env.stderr if st.env.stderr_isatty and not st.env.quiet else None
    outcome = pull_model(
        repo, file=file, quant=quant, alias=alias, revision=revision, offline=offline,
        notice=st.env.notice, progress_stream=bar_stream,
    )
    entry = outcome.entry
    how = "already downloaded" if outcome.already_cached else f"downloaded {_size(outcome.downloaded)}"
    st.env.notice(f"{how}; checked: a valid GGUF")
    st.env.notice(f"pulled {entry.repo}:{entry.file} as '{entry.name}' ({_size(entry.size)})")
    st.env.notice(f"use it: gptcli ask --model {entry.name} \"...\"   (or: gptcli models default {entry.name})")


@models_app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the embedded model, pulled models and added files, the default marked with '*'.

    Example: gptcli models list --json
    """
    from gptcli.models import list_models

    st = state(ctx)
    rows = list_models(_model_setting(st))
    if as_json:
        write_json(st.env.stdout, [r.as_dict() for r in rows])
        return
    table = [["", "NAME", "SIZE", "QUANT", "ARCH", "CTX", "SOURCE", "FROM"]]
    for r in rows:
        origin = f"{r.repo}:{r.file}" if r.repo else r.path
        if r.problem:
            origin = f"{origin}  ({r.problem})"
        table.append(
            [
                "*" if r.default else "",
                r.name,
                _size(r.size),
                r.quantization or "-",
                r.architecture or "-",
                str(r.context_length) if r.context_length else "-",
                r.source,
                origin,
            ]
        )
    write_columns(st.env, table)
    if not any(r.default for r in rows):
        st.env.notice("the default model cannot be resolved: see `gptcli doctor`")


@models_app.command("info")
def info(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="Alias, REPO[:FILE] or GGUF path (default: the default model).", autocompletion=complete_model)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a model's architecture, parameters, quantization, context and file, read from its GGUF header.

    The weights are not loaded.

    Example: gptcli models info smollm2-135m
    """
    from gptcli.models import model_info

    st = state(ctx)
    data = model_info(name if name is not None else _model_setting(st))
    if as_json:
        write_json(st.env.stdout, data)
        return
    params = data["parameters"]
    human = f"{params / 1e9:.2f} B" if params >= 1e9 else f"{params / 1e6:.1f} M"
    lines = [
        ("name", data["name"]),
        ("source", data["source"]),
        ("architecture", data["architecture"]),
        ("parameters", f"{human} ({params:,})"),
        ("quantization", data["quantization"]),
        ("context length", str(data["context_length"] or "unknown") + " (training)"),
        ("layers", str(data["layers"] or "unknown")),
        ("chat template", "yes" if data["chat_template"] else "no (a base model: plain transcript prompts)"),
        ("file size", _size(data["size"]) + (f" in {data['split_parts']} parts" if data["split_parts"] > 1 else "")),
        ("location", data["path"]),
    ]
    if data["real_path"] != data["path"]:
        lines.append(("blob", data["real_path"]))
    if data.get("repo"):
        lines.append(("hub", f"{data['repo']}:{data['file']} @ {data['revision']} ({(data['commit'] or '')[:12]})"))
    write_columns(st.env, lines)


@models_app.command("default")
def default(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Alias, REPO[:FILE] or GGUF path; 'smollm2-135m' for the embedded model.", autocompletion=complete_model)],
) -> None:
    """Set the model used when no --model is given.

    GPTCLI_MODEL and the config file's `model` still take precedence over it.

    Example: gptcli models default smol
    """
    from gptcli.models import set_default

    st = state(ctx)
    chosen, ref = set_default(name)
    st.env.notice(f"default model: {chosen} ({ref.path})")
    try:
        source = st.settings.sources.get("model")
    except ConfigError:
        source = None
    if source == "env":
        st.env.notice("note: GPTCLI_MODEL is set and takes precedence over this default")
    elif source == "file":
        st.env.notice(f"note: the config file's model = {st.settings.model!r} takes precedence over this default")


@models_app.command("add")
def add(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="A GGUF file on this machine (the first part of a split model).")],
    alias: Annotated[Optional[str], typer.Option("--alias", "-a", help="Name to use with --model.")] = None,
) -> None:
    """Register a local GGUF file under an alias; the file stays where it is.

    Example: gptcli models add ~/models/mistral-7b-instruct.Q4_K_M.gguf --alias mistral
    """
    from gptcli.models import add_local

    st = state(ctx)
    entry = add_local(path, alias)
    st.env.notice(f"added {entry.path} as '{entry.name}' ({_size(entry.size)})")


@models_app.command("rm")
def rm(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Alias (or REPO[:FILE]) of the model to remove.", autocompletion=complete_model)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a model: pulled files leave the Hub cache; an added file of yours is only unregistered.

    Example: gptcli models rm smol --yes
    """
    from gptcli.models import find_entry, remove_model

    st = state(ctx)
    entry = find_entry(name)
    if not yes:
        what = (
            f"remove '{entry.name}' and delete {_size(entry.size)} from the Hub cache"
            if entry.source == "hub"
            else f"unregister '{entry.name}' (the file {entry.path} stays)"
        )
        if not st.env.stdin_isatty:
            raise UsageError(f"would {what}: pass --yes to confirm")
        st.env.stderr.write(f"{what[0].upper()}{what[1:]}? [y/N] ")
        st.env.stderr.flush()
        answer = st.env.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            st.env.notice("nothing removed")
            raise typer.Exit(1)
    removal = remove_model(entry.name)
    if removal.deleted:
        st.env.notice(f"removed '{removal.name}' and deleted {plural(len(removal.deleted), 'file')} from the Hub cache")
    else:
        st.env.notice(f"removed '{removal.name}'" + (f" (kept {removal.kept[0]})" if removal.kept else ""))
    if removal.was_default:
        st.env.notice("it was the default model: the default is now the embedded model")


@app.command()
def doctor(
    ctx: typer.Context,
    no_load: Annotated[bool, typer.Option("--no-load", help="Do not load the default model.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check the installation: versions, GPU offload, CPU features, threads, default model, paths.

    Exits non-zero when something is broken, saying what.

    Example: gptcli doctor
    """
    from gptcli import doctor as checks_module
    from gptcli.engines import choose

    st = state(ctx)
    settings, problem = None, None
    try:
        settings = st.settings
    except ConfigError as exc:
        problem = str(exc)
    checks = checks_module.run_checks(settings, problem, load=not no_load, open_engine=choose.open_engine)
    failed = checks_module.problems(checks)
    if as_json:
        # one line: with --json a failure adds its own error line after it (JSON lines)
        write_text(st.env, json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}, ensure_ascii=False) + "\n")
    else:
        marks = {"ok": "ok", "info": "  ", "warn": "!!", "fail": "XX"}
        rows: list[tuple[str, str, str]] = []
        for c in checks:
            rows.append((marks[c.status], c.label, c.value))
            if c.detail and c.status in ("warn", "fail"):
                rows.append(("", "", f"-> {c.detail}"))  # under the value
        write_columns(st.env, rows)
    if failed:
        from gptcli.errors import GptcliError

        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        said = first.detail or first.value
        # a detail that names its subject already ("config file …: …") is not prefixed again
        head = "" if said.startswith(first.label) else f"{first.label}: "
        raise GptcliError(f"{head}{said}{more}")
