"""Settings precedence and config-file errors."""

from __future__ import annotations

import pytest

from gptcli.config import load_settings
from gptcli.errors import ConfigError


def test_defaults_file_env_flag_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('temperature = 0.3\nmodel = "from-file.gguf"\n')
    monkeypatch.setenv("GPTCLI_MODEL", "from-env.gguf")
    s = load_settings(cfg)
    assert (s.temperature, s.sources["temperature"]) == (0.3, "file")
    assert (s.model, s.sources["model"]) == ("from-env.gguf", "env")
    assert (s.top_k, s.sources["top_k"]) == (40, "default")
    s2 = s.with_flags(model="flag.gguf", temperature=None)
    assert (s2.model, s2.sources["model"]) == ("flag.gguf", "flag")
    assert s2.temperature == 0.3


@pytest.mark.parametrize(
    "text, message",
    [
        ("temperature = \n", "line 1"),
        ("top_k = 3\ncolour = 'red'\n", "line 2: unknown key 'colour'"),
        ("temperature = 'hot'\n", "temperature must be a number"),
        ("temperature = -1\n", "temperature must be >= 0"),
        ("ctx = 1000\n", "multiple of 256"),
        ("[engines.box]\nurl = 'x'\n", "unknown key 'url' in [engines.box]"),
    ],
)
def test_bad_config_names_file_and_problem(tmp_path, text, message):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert str(cfg) in str(err.value) and message in str(err.value)


def test_bad_config_file_is_one_line_error(run_gptcli, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("temperature = = 1\n")
    proc = run_gptcli("ask", "hi", env={"GPTCLI_CONFIG": str(cfg)})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(cfg) in lines[0] and "line 1" in lines[0]
    assert "Traceback" not in proc.stderr


def test_bad_env_value(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTCLI_TOP_P", "lots")
    with pytest.raises(ConfigError, match="GPTCLI_TOP_P"):
        load_settings(tmp_path / "none.toml")


def test_flash_attention_is_on_unless_the_user_turns_it_off():
    from gptcli.config import use_flash_attention

    assert use_flash_attention(None) is True  # faster on this CPU too, and batch logits = step logits
    assert use_flash_attention(False) is False and use_flash_attention(True) is True
