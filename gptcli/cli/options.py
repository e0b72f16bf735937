"""Options shared by every command that generates text, declared once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Optional, TypeVar

import typer

from gptcli.cli.completion import complete_engine, complete_model, complete_session
from gptcli.config import Settings

F = TypeVar("F", bound=Callable[..., Any])

PANEL = "Model and sampling"
OUT = "Output and history"


def gpu_layers_flag(text: str | None) -> int | str | None:
    """``--gpu-layers`` as given: a number, 'all', or None when the flag is absent."""
    if text is None or text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        from gptcli.errors import UsageError

        raise UsageError("--gpu-layers takes a number or 'all'") from None


@dataclass(frozen=True)
class GenOptions:
    """The generation flags of one command line (``None``: not given)."""

    model: Optional[str] = None
    engine: Optional[str] = None
    base_url: Optional[str] = None
    ctx_size: Optional[int] = None
    threads: Optional[int] = None
    gpu_layers: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repeat_penalty: Optional[float] = None
    max_tokens: Optional[int] = None
    seed: Optional[int] = None
    speculative: Optional[bool] = None
    draft_model: Optional[str] = None
    stats: bool = False
    no_stream: bool = False
    plain: bool = False
    json: bool = False
    no_history: bool = False
    no_loop_guard: bool = False

    def settings(self, base: Settings) -> Settings:
        """The settings with these flags applied on top."""
        return base.with_flags(
            model=self.model,
            engine=self.engine,
            base_url=self.base_url,
            ctx=self.ctx_size,
            threads=self.threads,
            gpu_layers=gpu_layers_flag(self.gpu_layers),
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            max_tokens=self.max_tokens,
            seed=self.seed,
            speculative=self.speculative,
            draft_model=self.draft_model,
            history=False if self.no_history else None,
            loop_guard=False if self.no_loop_guard else None,
        )


_OPTIONS: dict[str, Any] = {
    "model": Annotated[Optional[str], typer.Option("--model", "-m", help="Model: alias, REPO[:FILE], or GGUF path.", rich_help_panel=PANEL, autocompletion=complete_model)],
    "engine": Annotated[Optional[str], typer.Option("--engine", help="'local', 'remote', or a profile from the config file.", rich_help_panel=PANEL, autocompletion=complete_engine)],
    "base_url": Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server URL (remote engine).", rich_help_panel=PANEL)],
    "ctx_size": Annotated[Optional[int], typer.Option("--ctx", help="Context window in tokens (multiple of 256).", rich_help_panel=PANEL)],
    "threads": Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: physical cores).", rich_help_panel=PANEL)],
    "gpu_layers": Annotated[Optional[str], typer.Option("--gpu-layers", help="Layers offloaded to the GPU: N or 'all'.", rich_help_panel=PANEL)],
    "temperature": Annotated[Optional[float], typer.Option("--temperature", "--temp", help="Sampling temperature (0 = greedy).", rich_help_panel=PANEL)],
    "top_p": Annotated[Optional[float], typer.Option("--top-p", help="Nucleus sampling probability mass.", rich_help_panel=PANEL)],
    "top_k": Annotated[Optional[int], typer.Option("--top-k", help="Sample from the K likeliest tokens.", rich_help_panel=PANEL)],
    "min_p": Annotated[Optional[float], typer.Option("--min-p", help="Minimum probability relative to the best token.", rich_help_panel=PANEL)],
    "repeat_penalty": Annotated[Optional[float], typer.Option("--repeat-penalty", help="Penalty for repeated tokens.", rich_help_panel=PANEL)],
    "max_tokens": Annotated[Optional[int], typer.Option("--max-tokens", "-n", help="Most tokens in the reply.", rich_help_panel=PANEL)],
    "seed": Annotated[Optional[int], typer.Option("--seed", help="Random seed: same seed and input, same reply.", rich_help_panel=PANEL)],
    "speculative": Annotated[Optional[bool], typer.Option("--speculative/--no-speculative", help="Draft tokens from the input (or --draft-model) and check them in one batch; same reply, faster when it repeats its input. Default: on for editing templates and translate with --gpu-layers (on a CPU alone it does not pay).", rich_help_panel=PANEL)],
    "draft_model": Annotated[Optional[str], typer.Option("--draft-model", help="A small model with the same vocabulary to draft tokens (local engine).", rich_help_panel=PANEL, autocompletion=complete_model)],
    "stats": Annotated[bool, typer.Option("--stats", help="Print tokens, time to first token and tokens/s on stderr.", rich_help_panel=OUT)],
    "no_stream": Annotated[bool, typer.Option("--no-stream", help="Print the reply when it is complete.", rich_help_panel=OUT)],
    "plain": Annotated[bool, typer.Option("--plain", help="Raw text, no Markdown rendering.", rich_help_panel=OUT)],
    "json": Annotated[bool, typer.Option("--json", help="JSON lines: chunk events, then a final event with usage.", rich_help_panel=OUT)],
    "no_history": Annotated[bool, typer.Option("--no-history", help="Do not save this conversation.", rich_help_panel=OUT)],
    "no_loop_guard": Annotated[bool, typer.Option("--no-loop-guard", help="Let a reply that repeats itself run on to the token limit.", rich_help_panel=OUT)],
}


# --continue/--session: for commands that can carry on a saved conversation (not part of GenOptions,
# because most generating commands cannot)
ContinueOption = Annotated[bool, typer.Option("--continue", "-c", help="Continue the most recent saved conversation.", rich_help_panel=OUT)]
SessionOption = Annotated[Optional[str], typer.Option("--session", "-s", help="Continue the saved conversation with this id or title.", rich_help_panel=OUT, autocompletion=complete_session)]


def _with_help(annotation: Any, help_text: str, panel: str | None) -> Any:
    """The same ``Annotated[type, typer.Option(...)]`` with another help line (and panel)."""
    import copy

    kind, option = annotation.__origin__, copy.copy(annotation.__metadata__[0])
    option.help = help_text
    if panel is not None:
        option.rich_help_panel = panel
    return Annotated[kind, option]


def generation_options(
    func: F | None = None, *, leave_out: tuple[str, ...] = (), help: dict[str, str] | None = None, output_panel: str | None = None
) -> Callable[..., Any]:
    """Add the shared generation flags to a command; it receives them as ``gen: GenOptions``.

    ``@generation_options`` as it is, or ``@generation_options(leave_out=(...), help={...})`` for a
    command where some flags mean nothing (they keep their defaults) or mean something else.
    """
    if func is None:
        return lambda f: generation_options(f, leave_out=leave_out, help=help, output_panel=output_panel)
    sig = inspect.signature(func)
    own = [p for p in sig.parameters.values() if p.name != "gen"]
    names = [f.name for f in fields(GenOptions) if f.name not in leave_out]
    options = {name: _OPTIONS[name] for name in names}
    for name, text in (help or {}).items():
        options[name] = _with_help(options[name], text, output_panel)
    if output_panel is not None:
        for name in names:
            if options[name].__metadata__[0].rich_help_panel == OUT and name not in (help or {}):
                options[name] = _with_help(options[name], options[name].__metadata__[0].help, output_panel)
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=GenOptions.__dataclass_fields__[name].default, annotation=options[name])
        for name in names
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = GenOptions(**{name: kwargs.pop(name) for name in names if name in kwargs})
        return func(*args, gen=gen, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in func.__annotations__.items() if k != "gen"}, **options}
    return wrapper
