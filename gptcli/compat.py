"""Every workaround that reaches into a library's internals, in one place; tests/test_compat.py checks each still holds.

Each function here depends on something a library does not promise (a private module, an
attribute, a file's path). When an upgrade moves it, tests/test_compat.py fails naming the one
that broke, rather than a help page, a completion script or a download quietly changing.

Not here: the stand-in module that lets llama_cpp's ctypes bindings load without its ``__init__``
stays in ``gptcli/engines/llama.py``, the only module that may import ``llama_cpp``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# ------------------------------------------------------------ Typer: help pages


def patch_typer_help() -> None:
    """Help labels and placeholders as Click always wrote them (see ``_plain_type_labels``, ``_readable_help``)."""
    _plain_type_labels()
    _readable_help()


def _plain_type_labels() -> None:
    import typer

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
    option.make_metavar = make_metavar  # type: ignore[union-attr]


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
    core.TyperArgument.make_metavar = make_metavar  # type: ignore[method-assign]

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

    rich_utils.highlighter = Spaced(rich_utils.highlighter)  # type: ignore[assignment]
    rich_utils.negative_highlighter = Spaced(rich_utils.negative_highlighter)  # type: ignore[assignment]


def click_exceptions() -> Any:
    """The exceptions Typer's parsing raises: its private copy of Click's (``typer._click``), not ``click``'s."""
    from typer._click import exceptions

    return exceptions


# ------------------------------------------------------------ Typer: completion scripts

# Typer's zsh script only registers itself when zsh autoloads it from $fpath (the way
# `--install-completion` installs it), so the first TAB of every new shell completes nothing. This
# one (Click's pattern) answers that first TAB too, and still works when sourced.
ZSH_SCRIPT = """
#compdef %(prog_name)s

%(complete_func)s() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" %(autocomplete_var)s=complete_zsh %(prog_name)s)
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  # autoloaded from $fpath by compinit: complete this TAB already
  %(complete_func)s "$@"
else
  # sourced: register for the next TAB
  compdef %(complete_func)s %(prog_name)s
fi
"""


def use_first_tab_zsh_script() -> None:
    """Make ``--show-completion``/``--install-completion`` (and completions/generate) write ``ZSH_SCRIPT``."""
    try:
        from typer import _completion_shared
    except ImportError:  # a Typer without it: its own script still works from the second TAB
        return
    scripts = getattr(_completion_shared, "_completion_scripts", None)
    if isinstance(scripts, dict) and "zsh" in scripts:
        scripts["zsh"] = ZSH_SCRIPT


def completion_script(shell: str) -> str:
    """The completion script for ``shell`` (Typer's, with the first-TAB zsh script)."""
    from typer._completion_shared import get_completion_script

    use_first_tab_zsh_script()
    return str(get_completion_script(prog_name="gptcli", complete_var="_GPTCLI_COMPLETE", shell=shell))


def install_completion(shell: str) -> Path:
    """Install the completion script for ``shell`` where Typer installs it; returns that file."""
    from typer._completion_shared import install

    use_first_tab_zsh_script()
    _, path = install(shell=shell, prog_name="gptcli", complete_var="_GPTCLI_COMPLETE")
    return Path(path)


# ------------------------------------------------------------ huggingface_hub: downloads


@contextlib.contextmanager
def hf_file_lock(path: Path) -> Iterator[None]:
    """The same per-blob lock huggingface_hub takes, so two pulls never write one file at once."""
    from huggingface_hub.utils import WeakFileLock  # type: ignore[attr-defined]

    path.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(str(path)):
        yield


def hf_headers(version: str) -> dict[str, str]:
    """The request headers huggingface_hub sends (user agent, the token when one is set)."""
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    return dict(build_hf_headers(library_name="gptcli", library_version=version))


def hf_http_get(url: str, out: Any, **kwargs: Any) -> None:
    """huggingface_hub's resumable download of ``url`` into the open file ``out`` (an internal function)."""
    from huggingface_hub.file_download import http_get

    http_get(url, out, **kwargs)


# ------------------------------------------------------------ gguf: one table without the package


@functools.lru_cache(maxsize=1)
def gguf_quant_sizes() -> dict[int, tuple[int, int]]:
    """gguf's table of (block size, bytes per block) by tensor type.

    Read from ``gguf/constants.py`` alone: importing the ``gguf`` package loads numpy and its
    readers and writers, 70 ms of every command's start-up for one table.
    """
    import importlib.util

    spec = importlib.util.find_spec("gguf")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / "constants.py"
    module_spec = importlib.util.spec_from_file_location("_gptcli_gguf_constants", path)
    if module_spec is None or module_spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return {int(kind): sizes for kind, sizes in module.GGML_QUANT_SIZES.items()}


# ------------------------------------------------------------ wordllama


def import_wordllama() -> Any:
    """The ``wordllama`` module, imported without the logging set-up it does on import.

    wordllama calls logging.basicConfig(level=INFO) on import, which would print llama.cpp's log
    lines (routed through logging) on the user's terminal: the root logger is put back as it was.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import wordllama
    finally:
        root.setLevel(level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
    return wordllama


def load_wordllama(wordllama: Any, dim: int) -> Any:
    """The bundled WordLlama model of ``dim`` dimensions, with no download.

    wordllama looks for its bundled tokenizer in a folder it misnames ("tokenizer" for
    "tokenizers") and then downloads it; as the cache folder, the package folder is found.
    """
    package = Path(wordllama.__file__).parent
    return wordllama.WordLlama.load(cache_dir=package, disable_download=True, dim=dim)
