"""The model registry and `--model` resolution: aliases, local files, the default, list/info/add/rm; no network."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path

import pytest

from gptcli.hub import GGUFModelFiles, RemoteFile, choose_gguf, group_gguf_files, quant_of
from gptcli.models import EMBEDDED_NAME, Registry, RegisteredModel, embedded_model_path, model_names, resolve_model
from gptcli.render import Env
from tests.hubserver import loaded, tiny_gguf  # noqa: F401 (fixture)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        name: tiny_gguf(tmp_path / "models" / f"{name}.Q8_0.gguf", quant="Q8_0", name=name, context=4096)
        for name in ("alpha", "beta", "gamma")
    }


# ---------------------------------------------------------------- choosing a file (pure)


@pytest.mark.parametrize(
    "filename, quant",
    [
        ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("llama-3.2-1b-instruct-q8_0.gguf", "Q8_0"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("gemma-2-2b-it-IQ4_XS.gguf", "IQ4_XS"),
        ("Phi-3-mini-4k-instruct-fp16.gguf", "F16"),
        ("model-bf16-00001-of-00002.gguf", "BF16"),
        ("Q5_K_M/Big-Model-Q5_K_M-00002-of-00004.gguf", "Q5_K_M"),
        ("Q6_K/model-00001-of-00002.gguf", "Q6_K"),
        ("Qwen3-4B-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("mmproj-model-f16.gguf", "F16"),
        ("ggml-model.gguf", None),
    ],
)
def test_quantization_is_read_from_the_file_name(filename, quant):
    assert quant_of(filename) == quant


def _models(*names: str) -> list[GGUFModelFiles]:
    models, _ = group_gguf_files([RemoteFile(n, 1000 + i) for i, n in enumerate(names)])
    return models


def test_default_preference_and_the_reason_given():
    models = _models("m-Q8_0.gguf", "m-Q2_K.gguf", "m-Q5_K_M.gguf", "m-Q4_K_M.gguf", "m-F16.gguf")
    assert choose_gguf("r/m", models).model.first == "m-Q4_K_M.gguf"
    fallback = choose_gguf("r/m", _models("m-Q8_0.gguf", "m-Q2_K.gguf", "m-Q5_K_M.gguf"))
    assert fallback.model.first == "m-Q5_K_M.gguf"
    assert fallback.reason.startswith("no Q4_K_M, Q4_K_S in the repository")


def test_a_vision_projector_is_not_chosen_as_the_model():
    choice = choose_gguf("r/m", _models("mmproj-m-Q4_K_M.gguf", "m-Q8_0.gguf"))
    assert choice.model.first == "m-Q8_0.gguf"


def test_split_parts_are_grouped_in_order_and_incomplete_sets_reported():
    models, incomplete = group_gguf_files(
        [RemoteFile(f"x-Q4_K_M-{i:05d}-of-00003.gguf", 10) for i in (3, 1, 2)]
        + [RemoteFile("y-Q8_0-00001-of-00002.gguf", 10), RemoteFile("README.md", 5)]
    )
    assert [p.path for p in models[0].parts] == [f"x-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    assert models[0].size == 30 and len(models) == 1
    assert incomplete == ["y-Q8_0-00001-of-00002.gguf (1 of 2 parts in the repository)"]


def test_several_unnamed_files_need_an_explicit_file():
    from gptcli.errors import ModelError

    with pytest.raises(ModelError, match="pick one with --file"):
        choose_gguf("r/m", _models("first.gguf", "second.gguf"))
    assert choose_gguf("r/m", _models("only.gguf")).reason == "the only GGUF model in the repository"


# ---------------------------------------------------------------- add, list, info


def test_add_a_local_file_and_use_it_by_alias(cli, files, loaded):
    added = cli(["models", "add", str(files["alpha"]), "--alias", "a"])
    assert added.exit_code == 0, added.stderr
    assert added.stderr.startswith(f"added {files['alpha']} as 'a'")
    asked = cli(["ask", "hi", "--model", "a"])
    assert asked.exit_code == 0, asked.stderr
    assert loaded == [files["alpha"]]


def test_add_derives_an_alias_and_adding_twice_keeps_one_entry(cli, files):
    first = cli(["models", "add", str(files["beta"])])
    again = cli(["models", "add", str(files["beta"])])
    assert first.exit_code == again.exit_code == 0
    assert "as 'beta.q8_0'" in first.stderr and "as 'beta.q8_0'" in again.stderr
    assert list(Registry.load().models) == ["beta.q8_0"]


@pytest.mark.parametrize(
    "content, message",
    [(None, "model file not found"), (b"PK\x03\x04 a zip file, not a model" * 10, "GGUF magic"), (b"GGUF", "truncated")],
)
def test_add_refuses_what_is_not_a_gguf(cli, tmp_path, content, message):
    path = tmp_path / "thing.gguf"
    if content is not None:
        path.write_bytes(content)
    result = cli(["models", "add", str(path)])
    assert result.exit_code == 1 and message in result.stderr
    assert Registry.load().models == {}


def test_an_alias_cannot_be_taken_twice_or_be_odd(cli, files):
    assert cli(["models", "add", str(files["alpha"]), "--alias", "x"]).exit_code == 0
    taken = cli(["models", "add", str(files["beta"]), "--alias", "x"])
    assert taken.exit_code == 2 and "already taken" in taken.stderr
    odd = cli(["models", "add", str(files["beta"]), "--alias", "a/b"])
    assert odd.exit_code == 2 and "cannot be an alias" in odd.stderr
    embedded = cli(["models", "add", str(files["beta"]), "--alias", EMBEDDED_NAME])
    assert embedded.exit_code == 2


def test_list_shows_the_embedded_and_added_models_with_the_default_marked(cli, files):
    cli(["models", "add", str(files["alpha"]), "--alias", "a"])
    table = cli(["models", "list"])
    assert table.exit_code == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SIZE", "QUANT", "ARCH", "CTX", "SOURCE", "FROM"]
    assert lines[1].startswith("*") and EMBEDDED_NAME in lines[1] and "Q4_1" in lines[1]
    assert lines[2].split()[:6] == ["a", lines[2].split()[1], lines[2].split()[2], "Q8_0", "llama", "4096"]
    rows = json.loads(cli(["models", "list", "--json"]).stdout)
    assert [(r["name"], r["default"], r["source"]) for r in rows] == [(EMBEDDED_NAME, True, "embedded"), ("a", False, "local")]
    assert rows[1]["size"] == files["alpha"].stat().st_size and rows[1]["context_length"] == 4096


def test_list_flags_a_registered_file_that_disappeared(cli, files):
    cli(["models", "add", str(files["gamma"]), "--alias", "g"])
    files["gamma"].unlink()
    rows = {r["name"]: r for r in json.loads(cli(["models", "list", "--json"]).stdout)}
    assert rows["g"]["problem"] == "file missing"


def test_info_reads_the_header_of_the_embedded_model():
    from gptcli.models import model_info

    data = model_info(None)
    assert data["name"] == EMBEDDED_NAME and data["source"] == "embedded"
    assert data["architecture"] == "llama" and data["quantization"] == "Q4_1"
    assert 130e6 < data["parameters"] < 140e6
    assert data["context_length"] == 8192 and data["layers"] == 30 and data["chat_template"] is True
    assert data["size"] == embedded_model_path().stat().st_size


def test_info_on_a_path_needs_no_registration(cli, files):
    result = cli(["models", "info", str(files["beta"])])
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    assert "architecture    llama" in text and "quantization    Q8_0" in text
    assert "context length  4096" in text and "chat template   yes" in text
    assert str(files["beta"]) in text
    assert Registry.load().models == {}


def test_info_of_a_base_model_says_it_has_no_chat_template(cli, tmp_path):
    base = tiny_gguf(tmp_path / "base-Q4_K_M.gguf", chat_template=None)
    result = cli(["models", "info", str(base)])
    assert "chat template   no" in result.stdout


# ---------------------------------------------------------------- the default and its precedence


def test_default_precedence_flag_env_config_registry_embedded(cli, files, loaded, monkeypatch, tmp_path):
    for name in ("alpha", "beta"):
        cli(["models", "add", str(files[name]), "--alias", name])
    cli(["ask", "x"])
    assert loaded[-1] == embedded_model_path()  # nothing set: the embedded model

    chosen = cli(["models", "default", "alpha"])
    assert chosen.exit_code == 0 and chosen.stderr.startswith("default model: alpha")
    cli(["ask", "x"])
    assert loaded[-1] == files["alpha"]  # the registry default

    config = tmp_path / "config.toml"
    config.write_text('model = "beta"\n')
    monkeypatch.setenv("GPTCLI_CONFIG", str(config))
    cli(["ask", "x"])
    assert loaded[-1] == files["beta"]  # the config file beats the registry default
    noted = cli(["models", "default", "alpha"])
    assert "the config file's model = 'beta' takes precedence" in noted.stderr

    monkeypatch.setenv("GPTCLI_MODEL", str(files["gamma"]))
    cli(["ask", "x"])
    assert loaded[-1] == files["gamma"]  # GPTCLI_MODEL beats the config file

    cli(["ask", "x", "--model", "alpha"])
    assert loaded[-1] == files["alpha"]  # --model beats everything
    assert "GPTCLI_MODEL is set" in cli(["models", "default", "beta"]).stderr


def test_default_of_a_path_registers_it_and_the_embedded_name_resets(cli, files, loaded):
    result = cli(["models", "default", str(files["gamma"])])
    assert result.exit_code == 0, result.stderr
    assert Registry.load().default == "gamma.q8_0"
    cli(["ask", "x"])
    assert loaded[-1] == files["gamma"]
    assert cli(["models", "default", EMBEDDED_NAME]).exit_code == 0
    assert Registry.load().default is None
    cli(["ask", "x"])
    assert loaded[-1] == embedded_model_path()


def test_default_refuses_an_unknown_model(cli):
    result = cli(["models", "default", "nothing"])
    assert result.exit_code == 1 and "unknown model 'nothing'" in result.stderr
    assert Registry.load().default is None


def test_a_registered_file_that_is_gone_is_a_clear_error(cli, files, loaded):
    cli(["models", "add", str(files["alpha"]), "--alias", "a"])
    cli(["models", "default", "a"])
    files["alpha"].unlink()
    result = cli(["ask", "x"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: model 'a' is registered but its file is gone")
    assert "gptcli models rm a" in result.stderr
    assert loaded == []


def test_a_damaged_registry_is_a_clear_error(cli):
    from gptcli.models import registry_path

    registry_path().parent.mkdir(parents=True, exist_ok=True)
    registry_path().write_text("{ not json")
    result = cli(["models", "list"])
    assert result.exit_code == 1
    assert "the model registry" in result.stderr and "is damaged" in result.stderr


def test_the_registry_is_private_json(cli, files):
    from gptcli.models import registry_path

    cli(["models", "add", str(files["alpha"]), "--alias", "a"])
    assert stat.S_IMODE(registry_path().stat().st_mode) == 0o600
    data = json.loads(registry_path().read_text())
    assert data["models"]["a"]["path"] == str(files["alpha"]) and data["models"]["a"]["source"] == "local"


# ---------------------------------------------------------------- names --model accepts


def _fake_cache(repo: str, filenames: list[str], source: Path) -> Path:
    """A Hub cache entry as another tool (`hf download`) would leave it: refs/main, snapshot links, blobs."""
    folder = Path(os.environ["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))
    commit = "c" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for i, name in enumerate(filenames):
        blob = folder / "blobs" / f"{i:064x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(source.read_bytes())
        link = folder / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return folder / "snapshots" / commit


def test_repo_and_repo_file_already_in_the_hub_cache_resolve_without_the_network(files):
    snapshot = _fake_cache("someone/model-GGUF", ["model-Q4_K_M.gguf"], files["alpha"])
    assert resolve_model("someone/model-GGUF").path == snapshot / "model-Q4_K_M.gguf"
    assert resolve_model("someone/model-GGUF:model-Q4_K_M.gguf").path == snapshot / "model-Q4_K_M.gguf"


def test_a_repository_with_several_cached_files_must_be_named_with_a_file(files):
    from gptcli.errors import ModelError

    snapshot = _fake_cache("someone/multi-GGUF", ["m-Q4_K_M.gguf", "m-Q8_0.gguf"], files["alpha"])
    with pytest.raises(ModelError, match="several GGUF models of 'someone/multi-GGUF'"):
        resolve_model("someone/multi-GGUF")
    assert resolve_model("someone/multi-GGUF:m-Q8_0.gguf").path == snapshot / "m-Q8_0.gguf"


def test_several_pulls_from_one_repository_are_named_by_alias_or_file(files):
    from gptcli.errors import ModelError
    from gptcli.models import editing_registry

    with editing_registry() as registry:
        for alias, name in (("a", "alpha"), ("b", "beta")):
            registry.models[alias] = RegisteredModel(
                alias, str(files[name]), "hub", repo="acme/m-GGUF", file=f"{name}.gguf", commit="c" * 40
            )
    with pytest.raises(ModelError, match="several models were pulled from 'acme/m-GGUF'"):
        resolve_model("acme/m-GGUF")
    assert resolve_model("acme/m-GGUF:beta.gguf").path == files["beta"]
    assert resolve_model("b").path == files["beta"]
    assert model_names() == [EMBEDDED_NAME, "a", "b"]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no-such-alias", "unknown model 'no-such-alias'"),
        ("acme/not-pulled-GGUF", "model 'acme/not-pulled-GGUF' has not been pulled: run `gptcli models pull acme/not-pulled-GGUF` first"),
        ("acme/r:f.gguf", "run `gptcli models pull acme/r --file f.gguf` first"),
    ],
)
def test_unknown_names_say_what_to_do(cli, spec, message):
    result = cli(["ask", "hi", "--model", spec])
    assert result.exit_code == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_missing_gguf_path_is_still_reported_as_a_missing_file(cli, tmp_path):
    result = cli(["ask", "hi", "--model", str(tmp_path / "nope" / "model.gguf")])
    assert result.exit_code == 1 and "model file not found" in result.stderr


# ---------------------------------------------------------------- rm


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_with_answer(argv: list[str], answer: str) -> tuple[int, str, str]:
    from gptcli.cli import run

    env = Env(stdin=_TTY(answer), stdout=io.StringIO(), stderr=io.StringIO())
    code = run(argv, env=env)
    return code, env.stdout.getvalue(), env.stderr.getvalue()  # type: ignore[attr-defined]


def test_rm_asks_first_and_keeps_your_own_file(cli, files):
    cli(["models", "add", str(files["alpha"]), "--alias", "a"])
    cli(["models", "default", "a"])
    piped = cli(["models", "rm", "a"], stdin="")
    assert piped.exit_code == 2 and "pass --yes to confirm" in piped.stderr
    code, _, err = _run_with_answer(["models", "rm", "a"], "n\n")
    assert code == 1 and "Unregister 'a'" in err and "[y/N]" in err
    assert "a" in Registry.load().models
    code, out, err = _run_with_answer(["models", "rm", "a"], "y\n")
    assert code == 0 and "removed 'a'" in err and "the default is now the embedded model" in err
    assert files["alpha"].exists(), "a file of the user's own was deleted"
    registry = Registry.load()
    assert registry.models == {} and registry.default is None


def test_rm_of_the_embedded_or_an_unknown_model_is_refused(cli):
    embedded = cli(["models", "rm", EMBEDDED_NAME, "--yes"])
    assert embedded.exit_code == 1 and "cannot be removed" in embedded.stderr
    assert embedded_model_path().exists()
    unknown = cli(["models", "rm", "ghost", "--yes"])
    assert unknown.exit_code == 1 and "no model named 'ghost'" in unknown.stderr


# ---------------------------------------------------------------- help


@pytest.mark.parametrize("command", ["pull", "list", "info", "default", "add", "rm"])
def test_every_models_command_has_help_with_an_example(run_gptcli, command):
    result = run_gptcli("models", command, "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    assert "Example: gptcli models " in result.stdout
