"""Bad settings, flags, templates and models on the command line: one error line, before any model loads."""

from __future__ import annotations

import pytest


def assert_one_error_line(result, *needles: str, code: int = 1) -> str:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "-1"], "--temperature must be >= 0 and <= 5"),
        (["--temperature", "nan"], "--temperature must be >= 0 and <= 5"),
        (["--temperature", "inf"], "--temperature must be >= 0 and <= 5"),
        (["--top-p", "2"], "--top-p must be > 0 and <= 1"),
        (["--top-p", "0"], "--top-p must be > 0 and <= 1"),
        (["--min-p", "nan"], "--min-p must be >= 0 and <= 1"),
        (["--repeat-penalty", "0"], "--repeat-penalty must be > 0"),
        (["--top-k", "-1"], "--top-k must be an integer >= 0"),
        (["-n", "0"], "--max-tokens must be a positive integer"),
        (["--ctx", "1000"], "--ctx must be a multiple of 256"),
        (["--seed", "-1"], "--seed must be an integer between 0 and 4294967294"),
        (["--seed", "4294967295"], "--seed must be an integer between 0 and 4294967294"),
        (["--threads", "0"], "--threads must be a positive integer"),
        (["--gpu-layers", "many"], "--gpu-layers takes a number or 'all'"),
    ],
)
def test_out_of_range_sampling_flags_are_refused_before_the_model_loads(cli, fake_engine, flags, message):
    result = cli(["ask", "hi", *flags])
    assert_one_error_line(result, message, code=2)  # a usage error, like a flag that is not a number
    assert fake_engine.calls == []


@pytest.mark.parametrize("flag", ["--temperature", "--top-k", "--ctx", "-n"])
def test_a_flag_that_is_not_a_number_is_a_usage_error(cli, fake_engine, flag):
    result = cli(["ask", "hi", flag, "lots"])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert fake_engine.calls == []


@pytest.mark.parametrize(
    "text, message",
    [
        ("temperature = = 1\n", "line 1"),  # malformed TOML
        ("[engines\n", "line 1"),
        ("top_k = 3\ncolour = 'red'\n", "line 2: unknown key 'colour'"),
        ("temperature = 'hot'\n", "temperature must be a number"),
        ("max_tokens = 1.5\n", "max_tokens must be a positive integer"),
        ("history = 'yes'\n", "history must be true or false"),
        ("temperature = -0.5\n", "temperature must be >= 0"),
        ("top_p = 2\n", "top_p must be > 0 and <= 1"),
        ("top_p = nan\n", "top_p must be > 0 and <= 1"),
        ("seed = 99999999999\n", "seed must be an integer between"),
        ("engines = 3\n", "'engines' must be a table"),
    ],
)
def test_a_bad_config_file_is_one_line_naming_the_file(cli, fake_engine, isolated_home, text, message):
    config = isolated_home / "config.toml"
    config.write_text(text)
    line = assert_one_error_line(cli(["ask", "hi"]), message)
    assert str(config) in line
    assert fake_engine.calls == []


def test_a_config_file_that_is_not_utf8_or_is_a_folder(cli, fake_engine, isolated_home):
    config = isolated_home / "config.toml"
    config.write_bytes(b"temperature = 0.5 # caf\xe9\n")
    assert_one_error_line(cli(["ask", "hi"]), "is not UTF-8 text")
    config.unlink()
    config.mkdir()
    assert_one_error_line(cli(["ask", "hi"]), "is a directory")
    assert fake_engine.calls == []


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("GPTCLI_TEMPERATURE", "-1", "GPTCLI_TEMPERATURE: temperature must be >= 0"),
        ("GPTCLI_TOP_P", "lots", "GPTCLI_TOP_P: top_p must be a number"),
        ("GPTCLI_CTX", "300", "GPTCLI_CTX: ctx must be a multiple of 256"),
        ("GPTCLI_HISTORY", "maybe", "GPTCLI_HISTORY: history must be true or false"),
    ],
)
def test_a_bad_environment_variable_is_named(cli, fake_engine, monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    assert_one_error_line(cli(["ask", "hi"]), message)
    assert fake_engine.calls == []


def test_config_set_refuses_bad_values_and_keeps_the_file(cli, isolated_home):
    """Negative values are values, not options (`config set temperature -3` says what is wrong with -3)."""
    config = isolated_home / "config.toml"
    assert cli(["config", "set", "temperature", "0.4"]).exit_code == 0
    before = config.read_bytes()
    for key, value, needle in (("temperature", "-3", "temperature must be >= 0"), ("top_p", "2", "top_p must be > 0"),
                               ("colour", "red", "unknown setting 'colour'"), ("seed", "x", "seed must be a whole number")):
        assert_one_error_line(cli(["config", "set", key, value]), needle)
    assert config.read_bytes() == before
    assert cli(["config", "set", "gpu_layers", "-1"]).exit_code == 0
    assert "gpu_layers = -1" in config.read_text()


def test_unknown_template_model_engine_and_language(cli, fake_engine):
    assert_one_error_line(cli(["ask", "hi", "-t", "nope"]), "unknown template 'nope'", "templates list")
    assert_one_error_line(cli(["translate", "--to", "klingonx"], stdin="hi\n"), "unknown language 'klingonx'", code=2)
    assert_one_error_line(cli(["chat", "-t", "nope"], stdin="hi\n"), "unknown template 'nope'")
    assert_one_error_line(cli(["ask", "hi", "-v", "novalue"]), "-v expects key=value")
    assert_one_error_line(cli(["draft", "-v", "colour=red"], stdin="notes"), "has no variable 'colour'")
    assert fake_engine.calls == []


def test_an_unknown_model_or_engine_is_named_without_loading_anything(cli, isolated_home):
    """No fake engine here: the real chooser resolves the name and fails before llama.cpp."""
    assert_one_error_line(cli(["ask", "hi", "--model", "no-such-model"]), "unknown model 'no-such-model'", "models list")
    assert_one_error_line(cli(["ask", "hi", "--model", "./missing.gguf"]), "missing.gguf")
    assert_one_error_line(cli(["ask", "hi", "--engine", "nope"]), "unknown engine 'nope'")
    (isolated_home / "config.toml").write_text("[engines.box]\nbase_url = 3\n")
    assert_one_error_line(cli(["ask", "hi", "--engine", "box"]), "[engines.box] base_url must be a non-empty string")


BRACES = "{__class__} {0} {{x}} {name} %s %(x)s ${HOME} {{{{ {% for x in y %} }} {!r} \\N{BULLET}"


@pytest.mark.parametrize("command", ["ask", "draft", "summarize", "rewrite", "proofread"])
def test_brace_laden_input_reaches_the_model_verbatim(cli, fake_engine, command):
    """Input is data: never a format string, never Jinja, never evaluated."""
    args = [command, BRACES] if command == "ask" else [command]
    result = cli(args, stdin=BRACES + "\n" if command != "ask" else None)
    assert result.exit_code == 0, result.stderr
    assert BRACES in fake_engine.calls[-1][-1]["content"]


def test_brace_laden_template_variables_are_inserted_verbatim(cli, fake_engine):
    result = cli(["draft", "-v", f"tone={BRACES}", "-v", "audience={audience}"], stdin="notes\n")
    assert result.exit_code == 0, result.stderr
    everything = "\n".join(m["content"] for m in fake_engine.calls[-1])
    assert BRACES in everything and "{audience}" in everything
