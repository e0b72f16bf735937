"""``gptcli serve``: keep a model loaded behind llama-cpp-python's OpenAI-compatible server."""

from typing import Annotated, Optional

import typer

from gptcli.cli.app import app, state
from gptcli.cli.completion import complete_model
from gptcli.cli.options import gpu_layers_flag
from gptcli.errors import UsageError


@app.command()
def serve(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model: alias, REPO[:FILE], or GGUF path.", autocompletion=complete_model)] = None,
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port (0 picks a free one).")] = 8000,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (keep 127.0.0.1 unless you set a key).")] = "127.0.0.1",
    ctx_size: Annotated[Optional[int], typer.Option("--ctx", help="Context window in tokens (multiple of 256).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: physical cores).")] = None,
    gpu_layers: Annotated[Optional[str], typer.Option("--gpu-layers", help="Layers offloaded to the GPU: N or 'all'.")] = None,
    api_key_env: Annotated[
        Optional[str],
        typer.Option("--api-key-env", help="Require the key held in this environment variable (never the key itself).", metavar="NAME"),
    ] = None,
) -> None:
    """Serve a model over the OpenAI API (llama-cpp-python's server) so commands skip loading it.

    Prints the engine profile ("warm") to add to the config file; Ctrl-C stops the server.

    Example: gptcli serve --port 8080   (then: gptcli ask --engine warm "hello")
    """
    from gptcli.models import resolve_model
    from gptcli.server import ServePlan
    from gptcli.server import serve as run_server

    st = state(ctx)
    if not 0 <= port <= 65535:
        raise UsageError("--port must be between 0 and 65535")
    settings = st.settings.with_flags(model=model, ctx=ctx_size, threads=threads, gpu_layers=gpu_layers_flag(gpu_layers))
    ref = resolve_model(settings.model)
    plan = ServePlan(
        model_name=ref.name,
        model_path=ref.path,
        host=host,
        port=port,
        api_key_env=api_key_env,
        **settings.engine_options(),
    )
    raise typer.Exit(run_server(plan, st.env, verbose=st.verbose))
