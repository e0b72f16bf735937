"""Each workaround in gptcli/compat.py still holds against the installed libraries (an upgrade that breaks one fails here)."""

from __future__ import annotations

import ast
import importlib.metadata
import logging
import re
import sys
import tomllib
from pathlib import Path

import pytest

from gptcli import compat

ROOT = Path(__file__).resolve().parent.parent


def test_typer_option_labels_are_click_words_not_python_annotations(run_gptcli):
    result = run_gptcli("ask", "--help")
    assert result.returncode == 0
    model_line = next(line for line in result.stdout.splitlines() if "--model" in line)
    assert re.search(r"\sTEXT\s", model_line), model_line
    assert "<str>" not in result.stdout and "<int>" not in result.stdout


def test_typer_internals_the_help_patches_replace_are_still_there():
    import typer.core
    from typer import rich_utils

    import gptcli.cli.app  # noqa: F401  (applies the patches)
    from typer._click import types

    assert getattr(typer.core.TyperOption.make_metavar, "_gptcli", False), "TyperOption.make_metavar not patched"
    assert getattr(typer.core.TyperArgument.make_metavar, "_gptcli", False), "TyperArgument.make_metavar not patched"
    assert callable(types.ParamType.get_metavar)
    for name in ("RANGE_STRING", "highlighter", "negative_highlighter"):
        assert hasattr(rich_utils, name), f"typer.rich_utils.{name} is gone: the help patches no longer apply"


def test_help_ranges_and_option_names_read_as_patched(run_gptcli):
    result = run_gptcli("translate", "--help")
    assert result.returncode == 0
    assert "--a,--b" not in result.stdout and ",--" not in result.stdout
    assert "<int range>" not in result.stdout


def test_typer_raises_the_click_exceptions_the_cli_catches():
    import typer.main

    from gptcli.cli.app import app

    command = typer.main.get_command(app)
    with pytest.raises(compat.click_exceptions().UsageError):
        command.main(["ask", "--no-such-flag"], standalone_mode=False)


def test_the_zsh_script_answers_the_first_tab():
    from typer import _completion_shared

    assert isinstance(_completion_shared._completion_scripts, dict) and "zsh" in _completion_shared._completion_scripts
    script = compat.completion_script("zsh")
    assert "loadautofunc" in script and "_GPTCLI_COMPLETE=complete_zsh gptcli" in script
    assert "_GPTCLI_COMPLETE=complete_bash" in compat.completion_script("bash")


def test_install_completion_writes_where_typer_installs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    path = compat.install_completion("fish")
    assert path.is_file() and tmp_path in path.parents
    assert "gptcli" in path.read_text()


def test_huggingface_hub_internals_take_the_arguments_hub_py_passes():
    import inspect

    from huggingface_hub.file_download import http_get

    params = inspect.signature(http_get).parameters
    for name in ("resume_size", "headers", "expected_size", "displayed_filename", "tqdm_class"):
        assert name in params, f"huggingface_hub's http_get lost its {name!r} argument"
    headers = compat.hf_headers("9.9.9")
    assert "gptcli/9.9.9" in headers["user-agent"]


def test_huggingface_hub_file_lock_excludes_a_second_holder(tmp_path):
    from filelock import Timeout
    from huggingface_hub.utils import WeakFileLock

    lock = tmp_path / "locks" / "blob.lock"
    with compat.hf_file_lock(lock):
        assert lock.parent.is_dir()
        with pytest.raises(Timeout):
            with WeakFileLock(str(lock), timeout=0.1):
                pass


def test_gguf_quant_sizes_come_from_constants_py_without_importing_gguf(monkeypatch):
    monkeypatch.delitem(sys.modules, "gguf", raising=False)
    compat.gguf_quant_sizes.cache_clear()
    sizes = compat.gguf_quant_sizes()
    assert sizes[0] == (1, 4)  # F32: one value of four bytes
    assert sizes[8] == (32, 34)  # Q8_0: 32 values in 34 bytes
    assert "gguf" not in sys.modules


def test_wordllama_loads_offline_and_leaves_logging_as_it_was():
    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    sys.modules.pop("wordllama", None)
    wordllama = compat.import_wordllama()
    assert (root.level, list(root.handlers)) == before
    model = compat.load_wordllama(wordllama, 256)
    vectors = model.embed(["a cat", "a dog"], norm=True)
    assert len(vectors) == 2 and len(vectors[0]) == 256


def _imported_packages() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "gptcli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "gptcli"}


def test_every_imported_third_party_package_is_declared_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        re.split(r"[\s<>=!\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    }
    distributions = importlib.metadata.packages_distributions()
    missing = {}
    for package in sorted(_imported_packages()):
        dists = {d.lower().replace("_", "-") for d in distributions.get(package, [package])}
        if not dists & declared:
            missing[package] = sorted(dists)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
