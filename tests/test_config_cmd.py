"""`gptcli config show/path/set/unset/edit`: sources, validation, files kept as the user wrote them."""

from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from pathlib import Path

import pytest


def config_file(home: Path) -> Path:
    return home / "config.toml"  # GPTCLI_HOME is also the config folder


def rows(stdout: str) -> dict[str, tuple[str, str]]:
    """The plain `config show` table as {setting: (value, source)}."""
    table: dict[str, tuple[str, str]] = {}
    for line in stdout.splitlines()[2:]:
        if line.startswith("[engines."):
            continue
        name, value, source = line.split(None, 2)
        table[name] = (value, source)
    return table


def test_show_lists_every_setting_with_its_default_source(cli, isolated_home):
    from gptcli.config import KEYS

    result = cli(["config", "show"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"config file: {config_file(isolated_home)} (not created yet)"
    table = rows(result.stdout)
    assert set(table) == set(KEYS)
    assert table["temperature"] == ("0.7", "default")
    assert table["model"] == ("-", "default")
    assert "\x1b[" not in result.stdout


def test_show_names_file_env_and_flag_sources(cli, isolated_home, monkeypatch):
    config_file(isolated_home).write_text("temperature = 0.2\noverflow = 'drop'\n")
    monkeypatch.setenv("GPTCLI_MAX_TOKENS", "64")
    result = cli(["--color", "never", "config", "show"])
    assert result.exit_code == 0, result.stderr
    table = rows(result.stdout)
    assert table["temperature"] == ("0.2", "file")
    assert table["overflow"] == ("drop", "file")
    assert table["max_tokens"] == ("64", "env GPTCLI_MAX_TOKENS")
    assert table["color"] == ("never", "flag")
    assert table["top_k"] == ("40", "default")


def test_show_json_is_a_stable_object(cli, isolated_home, monkeypatch):
    config_file(isolated_home).write_text('gpu_layers = "all"\n[engines.work]\nbase_url = "http://127.0.0.1:9/v1"\n')
    monkeypatch.setenv("GPTCLI_SEED", "7")
    result = cli(["config", "show", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(config_file(isolated_home)) and data["exists"] is True
    assert data["settings"]["gpu_layers"] == {
        "value": "all", "source": "file", "default": 0, "help": data["settings"]["gpu_layers"]["help"]
    }
    assert data["settings"]["seed"]["value"] == 7 and data["settings"]["seed"]["source"] == "env"
    assert data["settings"]["model"]["value"] is None
    assert data["profiles"] == {"work": {"base_url": "http://127.0.0.1:9/v1"}}


def test_show_one_key_prints_just_its_value(cli, isolated_home):
    config_file(isolated_home).write_text("max_tokens = 300\n")
    assert cli(["config", "show", "max_tokens"]).stdout == "300\n"
    assert cli(["config", "show", "model"]).stdout == "\n"
    data = json.loads(cli(["config", "show", "max_tokens", "--json"]).stdout)
    assert data == {"key": "max_tokens", "value": 300, "source": "file"}


def test_show_reports_a_broken_file_naming_the_line(cli, isolated_home):
    config_file(isolated_home).write_text("# mine\ntemperature = 0.2\ntop_k = -3\n")
    result = cli(["config", "show"])
    assert result.exit_code == 1
    assert "line 3" in result.stderr and "top_k" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_syntax_error_leaves_config_show_and_edit_working(cli, isolated_home, tmp_path, monkeypatch):
    config_file(isolated_home).write_text("temperature = 0.3\ntop_k = [\n")
    monkeypatch.setenv("GPTCLI_SEED", "7")
    shown = cli(["config", "show"])
    assert shown.exit_code == 1
    assert "not read: it has an error" in shown.stdout
    assert "seed" in shown.stdout and "env GPTCLI_SEED" in shown.stdout  # the other sources are still shown
    (line,) = shown.stderr.strip().splitlines()
    assert line.startswith(f"error: config file {config_file(isolated_home)}") and "config edit" in line
    assert "config file: config file" not in line
    as_json = cli(["config", "show", "--json"])  # a script gets the error event alone
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["type"] == "error"
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "path.write_text('temperature = 0.3\\ntop_k = 5\\n')\n"))
    fixed = cli(["config", "edit"])
    assert fixed.exit_code == 0, fixed.stderr
    assert cli(["config", "show", "top_k"]).stdout == "5\n"


def test_doctor_names_a_broken_config_file_once(cli, isolated_home):
    config_file(isolated_home).write_text("top_k = [\n")
    result = cli(["doctor", "--no-load"])
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config file ") and "config file: config file" not in last


def test_set_on_a_new_file_writes_the_commented_file_edit_promises(cli, isolated_home):
    assert cli(["config", "set", "top_k", "12"]).exit_code == 0
    text = config_file(isolated_home).read_text()
    assert tomllib.loads(text) == {"top_k": 12}
    assert "# temperature = 0.7" in text and '# overflow = "summarize"' in text  # every other key, commented out
    assert "\ntop_k = 12\n" in text and "# top_k =" not in text  # set in its own place


def test_path_prints_the_config_file(cli, isolated_home):
    result = cli(["config", "path"])
    assert result.exit_code == 0
    assert result.stdout == f"{config_file(isolated_home)}\n"
    assert "not created yet" in result.stderr
    config_file(isolated_home).write_text("")
    assert cli(["config", "path"]).stderr == ""


def test_set_validates_and_writes_a_value_other_commands_use(cli, isolated_home, fake_engine):
    result = cli(["config", "set", "temperature", "0.25"])
    assert result.exit_code == 0, result.stderr
    assert tomllib.loads(config_file(isolated_home).read_text()) == {"temperature": 0.25}
    assert stat.S_IMODE(config_file(isolated_home).stat().st_mode) == 0o600
    cli(["ask", "hi", "--no-history"])
    assert fake_engine.samplings[0].temperature == 0.25


def test_set_keeps_comments_other_keys_and_profiles(cli, isolated_home):
    original = (
        "# my settings\n"
        "temperature = 0.3  # a bit cooler\n"
        "\n"
        "[engines.work]\n"
        'base_url = "http://127.0.0.1:8080/v1"  # the office box\n'
    )
    config_file(isolated_home).write_text(original)
    assert cli(["config", "set", "max_tokens", "200"]).exit_code == 0
    assert cli(["config", "set", "temperature", "0.5"]).exit_code == 0
    assert cli(["config", "set", "gpu_layers", "all"]).exit_code == 0
    assert cli(["config", "set", "history", "off"]).exit_code == 0
    text = config_file(isolated_home).read_text()
    assert "# my settings" in text and "# a bit cooler" in text and "# the office box" in text
    data = tomllib.loads(text)
    assert data["temperature"] == 0.5 and data["max_tokens"] == 200
    assert data["gpu_layers"] == "all" and data["history"] is False
    assert data["engines"] == {"work": {"base_url": "http://127.0.0.1:8080/v1"}}  # new keys not swallowed by the table


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("overflow", "squash", "must be one of: summarize, drop, stop"),
        ("color", "sometimes", "must be one of: auto, always, never"),
        ("temperature", "hot", "temperature must be a number"),
        ("temperature", "9", "must be >= 0 and <= 5"),
        ("ctx", "1000", "multiple of 256"),
        ("history", "maybe", "must be true or false"),
        ("gpu_layers", "most", "or 'all'"),
    ],
)
def test_set_refuses_a_bad_value_naming_what_is_allowed(cli, isolated_home, key, value, message):
    result = cli(["config", "set", key, value])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: invalid value '{value}'") and message in result.stderr
    assert not config_file(isolated_home).exists()


def test_set_unknown_key_suggests_the_close_one(cli, isolated_home):
    result = cli(["config", "set", "temprature", "0.1"])
    assert result.exit_code == 1
    assert "unknown setting 'temprature'" in result.stderr and "did you mean 'temperature'" in result.stderr
    assert "overflow" in result.stderr  # the known settings are listed


def test_set_fixes_a_file_whose_other_value_is_bad(cli, isolated_home):
    config_file(isolated_home).write_text("top_k = -3\n")
    assert cli(["config", "set", "top_k", "20"]).exit_code == 0
    assert cli(["config", "show", "top_k"]).stdout == "20\n"


def test_set_refuses_a_file_that_is_not_toml(cli, isolated_home):
    config_file(isolated_home).write_text("temperature = = 1\n")
    result = cli(["config", "set", "top_k", "20"])
    assert result.exit_code == 1
    assert "line 1" in result.stderr and "gptcli config edit" in result.stderr
    assert config_file(isolated_home).read_text() == "temperature = = 1\n"


def test_set_writes_through_a_symlinked_config(cli, isolated_home, tmp_path):
    real = tmp_path / "dotfiles" / "gptcli.toml"
    real.parent.mkdir()
    real.write_text("seed = 1\n")
    config_file(isolated_home).symlink_to(real)
    assert cli(["config", "set", "seed", "2"]).exit_code == 0
    assert config_file(isolated_home).is_symlink()
    assert tomllib.loads(real.read_text()) == {"seed": 2}


def test_set_warns_when_the_environment_overrides_it(cli, monkeypatch):
    monkeypatch.setenv("GPTCLI_TOP_K", "5")
    result = cli(["config", "set", "top_k", "20"])
    assert result.exit_code == 0
    assert "GPTCLI_TOP_K is set in the environment" in result.stderr


def test_unset_removes_the_key_and_the_default_applies(cli, isolated_home):
    config_file(isolated_home).write_text("# keep me\ntemperature = 0.1\nseed = 3\n")
    result = cli(["config", "unset", "temperature"])
    assert result.exit_code == 0, result.stderr
    text = config_file(isolated_home).read_text()
    assert "# keep me" in text and tomllib.loads(text) == {"seed": 3}
    assert rows(cli(["config", "show"]).stdout)["temperature"] == ("0.7", "default")
    again = cli(["config", "unset", "temperature"])
    assert again.exit_code == 0 and "not set" in again.stderr
    assert cli(["config", "unset", "nope"]).exit_code == 1


def _editor(tmp_path: Path, body: str) -> str:
    """An $EDITOR that runs ``body`` (Python) with the file's path in ``path``."""
    script = tmp_path / "editor.py"
    script.write_text("import sys\nfrom pathlib import Path\npath = Path(sys.argv[1])\n" + body)
    return f"{sys.executable} {script}"


def test_edit_creates_a_commented_file_and_accepts_a_valid_edit(cli, isolated_home, tmp_path, monkeypatch):
    seen = tmp_path / "seen.toml"
    monkeypatch.setenv(
        "EDITOR",
        _editor(tmp_path, f"Path({str(seen)!r}).write_text(path.read_text())\npath.write_text(path.read_text() + 'top_k = 12\\n')\n"),
    )
    result = cli(["config", "edit"])
    assert result.exit_code == 0, result.stderr
    scaffold = seen.read_text()
    assert tomllib.loads(scaffold) == {}  # everything commented out
    assert "# temperature = 0.7" in scaffold and "# overflow = \"summarize\"" in scaffold
    assert "is valid" in result.stderr
    assert cli(["config", "show", "top_k"]).stdout == "12\n"


def test_edit_reports_a_bad_edit_naming_the_line(cli, isolated_home, tmp_path, monkeypatch):
    config_file(isolated_home).write_text("seed = 1\n")
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "path.write_text('seed = 1\\n\\noverflow = \"squash\"\\n')\n"))
    result = cli(["config", "edit"])
    assert result.exit_code == 1
    assert "line 3" in result.stderr and "must be one of: summarize, drop, stop" in result.stderr
    assert "run `gptcli config edit` again" in result.stderr
    assert "squash" in config_file(isolated_home).read_text()  # the edit is kept for fixing


def test_edit_reports_a_toml_syntax_error_with_its_line(cli, isolated_home, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "path.write_text('seed = 1\\ntop_k = = 3\\n')\n"))
    result = cli(["config", "edit"])
    assert result.exit_code == 1 and "line 2" in result.stderr


def test_edit_with_a_failing_editor_is_an_error(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR", _editor(tmp_path, "raise SystemExit(3)\n"))
    result = cli(["config", "edit"])
    assert result.exit_code == 1 and "exited with status 3" in result.stderr


def test_edit_without_an_editor_says_how_to_set_one(cli, monkeypatch):
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    result = cli(["config", "edit"])
    assert result.exit_code == 1 and "$EDITOR" in result.stderr


def test_config_from_the_installed_executable(run_gptcli, isolated_home):
    """The real program end to end: set, show (a pipe: plain), unset."""
    env = {"GPTCLI_HOME": str(isolated_home)}
    assert run_gptcli("config", "set", "overflow", "stop", env=env).returncode == 0
    shown = run_gptcli("config", "show", env=env)
    assert shown.returncode == 0 and "\x1b[" not in shown.stdout
    assert rows(shown.stdout)["overflow"] == ("stop", "file")
    bad = run_gptcli("config", "set", "overflow", "nope", env=env)
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert os.path.exists(config_file(isolated_home))


def test_every_key_is_documented_in_the_readme():
    from gptcli.config import KEYS
    from tests.conftest import ROOT

    doc = (ROOT / "README.md").read_text()
    missing = [name for name in KEYS if f"| `{name}` |" not in doc or f"`GPTCLI_{name.upper()}`" not in doc]
    assert missing == [], f"document these settings in the README's key table: {missing}"
