"""Warm mode: llama-cpp-python's own OpenAI-compatible server, started with gptcli's model and settings."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gptcli.config import use_flash_attention
from gptcli.errors import GptcliError, ModelError, UsageError
from gptcli.render import Env

PROFILE_NAME = "warm"


@dataclass(frozen=True)
class ServePlan:
    """What to serve and where: the model file, its llama.cpp options, the address, the key's variable."""

    model_name: str
    model_path: Path
    host: str = "127.0.0.1"
    port: int = 8000
    ctx: int | None = None
    threads: int | None = None
    gpu_layers: int = 0
    flash_attn: bool | None = None  # None: on
    batch_size: int = 512
    api_key_env: str | None = None  # the variable holding the key clients must send; None: no key


def base_url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/v1"


def profile_snippet(base_url: str, model: str, context_length: int, api_key_env: str | None, name: str = PROFILE_NAME) -> str:
    """The ``[engines.NAME]`` table that points gptcli at a served model."""
    lines = [
        f"[engines.{name}]",
        f'base_url = "{base_url}"',
        f'model = "{model}"',
        f"context_length = {context_length}",
    ]
    if api_key_env:
        lines.append(f'api_key_env = "{api_key_env}"')
    return "\n".join(lines)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind the listening socket first: a busy port fails before the model loads; port 0 picks one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48):  # EADDRINUSE on Linux, macOS
            raise GptcliError(f"port {port} on {host} is already in use: choose another with --port") from None
        raise GptcliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    return sock


def build_app(plan: ServePlan, api_key: str | None, verbose: bool) -> tuple[Any, int]:
    """llama-cpp-python's FastAPI app with the model loaded, and its context size.

    gptcli's llama.cpp workaround (AMX kernels that crash in some VMs) is applied before the
    model loads, and ``/props`` is added (llama.cpp's shape) so clients can read the context size.
    """
    from gptcli.engines import local
    from gptcli.ggufinfo import read_gguf

    info = read_gguf(plan.model_path)  # a broken file is a clear error here, not an abort in C
    n_ctx = local.default_context(info, plan.ctx)
    threads = plan.threads or local.physical_cores()
    from gptcli.engines.llama import import_llama_package

    import_llama_package()

    try:
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise GptcliError(
            f"gptcli serve needs llama-cpp-python's server ({exc.name} is missing):"
            " pip install 'gptcli[serve]' (or 'llama-cpp-python[server]')"
        ) from None

    # the settings classes also read environment variables (PORT, API_KEY, N_CTX, CONFIG_FILE...):
    # everything that matters is given explicitly, and CONFIG_FILE would replace it all
    saved_config = os.environ.pop("CONFIG_FILE", None)
    try:
        server_settings = ServerSettings(
            host=plan.host,
            port=plan.port,
            api_key=api_key,
            interrupt_requests=False,  # its default cuts a streaming reply short when another request arrives
            ssl_keyfile=None,
            ssl_certfile=None,
            root_path="",
        )
        model_settings = ModelSettings(
            model=str(plan.model_path),
            model_alias=plan.model_name,
            n_ctx=n_ctx,
            n_batch=min(plan.batch_size, n_ctx),
            n_ubatch=min(plan.batch_size, n_ctx),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=plan.gpu_layers,
            flash_attn=use_flash_attention(plan.flash_attn),
            chat_format=None,
            verbose=verbose,
        )
        app = create_app(server_settings=server_settings, model_settings=[model_settings])
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"cannot load model {plan.model_path}: {exc}") from None
    finally:
        if saved_config is not None:
            os.environ["CONFIG_FILE"] = saved_config

    def props() -> dict[str, Any]:
        return {
            "default_generation_settings": {"n_ctx": n_ctx, "model": plan.model_name},
            "total_slots": 1,
            "model_path": plan.model_path.name,
        }

    app.add_api_route("/props", props, methods=["GET"], include_in_schema=False)
    return app, n_ctx


def serve(plan: ServePlan, env: Env, *, verbose: bool = False) -> int:
    """Load the model, print the profile that points gptcli at it, and serve until Ctrl-C."""
    api_key: str | None = None
    if plan.api_key_env:
        api_key = os.environ.get(plan.api_key_env) or None
        if api_key is None:
            raise UsageError(f"--api-key-env {plan.api_key_env}: that environment variable is not set")
    if not _is_loopback(plan.host) and api_key is None:
        env.notice(f"warning: serving on {plan.host} without an API key: anyone who can reach it can use it")

    sock = bind_socket(plan.host, plan.port)
    try:
        port = sock.getsockname()[1]
        env.notice(f"loading {plan.model_name} ...")
        app, n_ctx = build_app(plan, api_key, verbose)
        import uvicorn  # present: build_app imported llama-cpp-python's server, which needs it

        base_url = base_url_for(plan.host, port)
        snippet = profile_snippet(base_url, plan.model_name, n_ctx, plan.api_key_env)
        message = (
            f"Serving {plan.model_name} at {base_url} (context {n_ctx} tokens; Ctrl-C stops it)\n"
            f"Point gptcli at it with this profile in its config file:\n\n{snippet}\n\n"
            f'then: gptcli ask --engine {PROFILE_NAME} "Hello"\n'
            f"  or: gptcli ask --engine remote --base-url {base_url} \"Hello\"\n"
        )
        env.stdout.write(message)
        env.stdout.flush()
        config = uvicorn.Config(
            app,
            log_level="info" if verbose else "warning",
            access_log=verbose,
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        server.run(sockets=[sock])
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    return 0
