"""Prompt templates: safe rendering, variables, validation, user overrides, the templates commands."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gptcli.errors import TemplateError
from gptcli.templates import (
    BUILTIN,
    USER,
    TemplateLibrary,
    builtin_dir,
    load_template,
    parse_template,
    parse_vars,
    render_text,
    scaffold,
    user_dir,
)

SHIPPED = ["ask", "draft", "proofread", "reply", "rewrite", "summarize", "support"]


def write_user_template(name: str, text: str) -> Path:
    folder = user_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


GREETING = '''
description = "Greets someone."
system = "You greet people in a {style} way."
user = "Greet {who}: {input}"
temperature = 0.2
max_tokens = 64

[variables]
who = "the person to greet"
style = { description = "how", default = "warm" }
'''


# ---------------------------------------------------------------- rendering

def test_placeholders_are_substituted_and_doubled_braces_are_literal():
    assert render_text("{{a}} {name} }}{{", {"name": "Bo"}) == "{a} Bo }{"


@pytest.mark.parametrize("hostile", ["{__class__}", "{0}", "{input}", "{who.__init__.__globals__}", "{{x}}", "{", "}{", "%s", "${HOME}"])
def test_brace_laden_input_stays_literal(hostile):
    template = parse_template("greet", GREETING, source=BUILTIN)
    messages = template.render(f"hi {hostile} there", {"who": "Ann {style}"})
    assert messages[-1]["content"] == f"Greet Ann {{style}}: hi {hostile} there"
    assert messages[0]["content"] == "You greet people in a warm way."


@given(st.text(), st.text())
def test_values_are_inserted_verbatim_and_never_rescanned(input_text, value):
    template = parse_template("greet", GREETING, source=BUILTIN)
    messages = template.render(input_text, {"who": value})
    assert messages[-1]["content"] == f"Greet {value}: {input_text}".strip()


def test_messages_are_system_then_examples_then_user():
    template = load_template("proofread")
    messages = template.render("Teh cat.")
    roles = [m["role"] for m in messages]
    assert roles[0] == "system" and roles[-1] == "user"
    assert roles[1:-1] == ["user", "assistant"]  # the shipped few-shot example
    assert "Teh cat." in messages[-1]["content"] and "Teh cat." not in messages[1]["content"]


# ---------------------------------------------------------------- variables

def test_defaults_fill_in_and_given_values_win():
    template = parse_template("greet", GREETING, source=BUILTIN)
    assert template.values({"who": "Bo"}) == {"who": "Bo", "style": "warm"}
    assert template.values({"who": "Bo", "style": "curt"})["style"] == "curt"


def test_missing_required_variable_lists_what_is_needed():
    template = parse_template("greet", GREETING, source=BUILTIN)
    with pytest.raises(TemplateError) as err:
        template.render("hello")
    assert "-v who=..." in str(err.value) and "the person to greet" in str(err.value)


def test_unknown_variable_is_an_error_naming_the_known_ones():
    template = parse_template("greet", GREETING, source=BUILTIN)
    with pytest.raises(TemplateError) as err:
        template.values({"who": "Bo", "colour": "red"})
    assert "'colour'" in str(err.value) and "style, who" in str(err.value)


def test_parse_vars():
    assert parse_vars(["a=1", "b = x=y", "a=2"]) == {"a": "2", "b": " x=y"}
    with pytest.raises(TemplateError, match="key=value"):
        parse_vars(["novalue"])


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize(
    "text, message",
    [
        ('user = "{input}"\nsystem = "{missing}"', "declares no 'missing'"),
        ('user = "{input} {0}"', "single brace"),
        ('user = "{input} { spaced }"', "single brace"),
        ('user = "{input} }"', "single brace"),
        ('user = "no input here"', "must contain {input}"),
        ('user = "{input}"\ncolour = "red"', "unknown key 'colour'"),
        ('user = "{input}"\ntemperature = "hot"', "'temperature' must be a number"),
        ('user = "{input}"\nmax_tokens = -3', "'max_tokens' must be a positive"),
        ('user = "{input}"\n[variables]\ninput = "x"', "'input' is reserved"),
        ('user = "{input}"\n[variables]\n"bad-name" = "x"', "variable name 'bad-name'"),
        ('user = "{input}"\n[[examples]]\nrole = "robot"\ncontent = "x"', "role"),
        ('user = "{input}\n', "line 1"),  # TOML syntax error: the parser's position is kept
    ],
)
def test_invalid_templates_are_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "t.toml"
    with pytest.raises(TemplateError) as err:
        parse_template("t", text, source=USER, path=path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)


def test_a_template_without_input_can_say_so():
    template = parse_template("joke", 'input = false\nuser = "Tell a joke."', source=USER)
    assert template.render("")[-1]["content"] == "Tell a joke."


def test_the_scaffold_is_a_valid_template():
    template = parse_template("mine", scaffold("mine"), source=USER)
    assert template.description and template.variable("style") is not None
    assert "hello" in template.render("hello")[-1]["content"]


def test_every_shipped_template_is_valid_and_documented():
    library = TemplateLibrary.load([(builtin_dir(), BUILTIN)])
    assert library.broken == {}
    assert set(SHIPPED) <= set(library.templates)
    for name in SHIPPED:
        template = library.get(name)
        assert template.description, name
        assert all(v.description for v in template.variables), name
        assert all(not v.required for v in template.variables), f"{name} should run without -v"


def test_draft_keeps_its_variable_names():
    names = {v.name for v in load_template("draft").variables}
    assert names == {"kind", "tone", "length", "audience", "instructions"}


def test_support_has_company_product_tone_and_knowledge():
    names = {v.name for v in load_template("support").variables}
    assert {"company", "product", "tone", "knowledge"} <= names


# ---------------------------------------------------------------- the library

def test_user_templates_add_to_and_override_the_builtins():
    write_user_template("greet", GREETING)
    write_user_template("ask", 'description = "My ask."\nuser = "Mine: {input}"')
    library = TemplateLibrary.load()
    assert library.get("greet").source == USER
    ask = library.get("ask")
    assert ask.source == USER and ask.render("x")[-1]["content"] == "Mine: x"
    assert library.entries["ask"].overrides and not library.entries["greet"].overrides
    assert library.get("draft").source == BUILTIN


def test_a_broken_user_template_names_its_file_and_others_keep_working():
    bad = write_user_template("broken", 'user = "{input}" {{{')
    write_user_template("greet", GREETING)
    library = TemplateLibrary.load()
    with pytest.raises(TemplateError) as err:
        library.get("broken")
    assert str(bad) in str(err.value)
    assert library.get("greet").name == "greet" and library.get("ask").source == BUILTIN


def test_one_lister_names_every_template_or_only_the_usable_ones():
    from gptcli.templates import template_names

    write_user_template("broken", 'user = "{input}" {{{')
    write_user_template("greet", GREETING)
    every, usable = template_names(), template_names(usable=True)
    assert every == sorted(every) and {"ask", "greet", "broken"} <= set(every)
    assert usable == [name for name in every if name != "broken"]


def test_a_broken_override_is_an_error_not_a_silent_fallback():
    bad = write_user_template("summarize", 'user = "no input"')
    with pytest.raises(TemplateError) as err:
        load_template("summarize")
    assert str(bad) in str(err.value)


def test_a_user_template_that_is_not_utf8_is_reported():
    folder = user_dir()
    folder.mkdir(parents=True)
    (folder / "latin.toml").write_bytes('user = "caf\xe9 {input}"'.encode("latin-1"))
    library = TemplateLibrary.load()
    assert "not UTF-8" in str(library.broken["latin"])


def test_unknown_template_lists_the_known_ones():
    with pytest.raises(TemplateError) as err:
        load_template("nope")
    assert "unknown template 'nope'" in str(err.value) and "support" in str(err.value)


# ---------------------------------------------------------------- commands that render templates

def test_ask_with_a_user_template_and_vars(cli, fake_engine):
    write_user_template("greet", GREETING)
    result = cli(["ask", "-t", "greet", "-v", "who=Ann", "-v", "style=formal", "good morning {0}"])
    assert result.exit_code == 0, result.stderr
    assert fake_engine.calls[0][0]["content"] == "You greet people in a formal way."
    assert fake_engine.calls[0][-1]["content"] == "Greet Ann: good morning {0}"
    assert fake_engine.samplings[0].temperature == 0.2 and fake_engine.samplings[0].max_tokens == 64


def test_flags_beat_template_sampling_defaults(cli, fake_engine):
    write_user_template("greet", GREETING)
    cli(["ask", "-t", "greet", "-v", "who=Ann", "hi", "--temperature", "0.9", "-n", "7"])
    assert (fake_engine.samplings[0].temperature, fake_engine.samplings[0].max_tokens) == (0.9, 7)


def test_missing_variable_on_the_command_line(cli, fake_engine):
    write_user_template("greet", GREETING)
    result = cli(["ask", "-t", "greet", "hi"])
    assert result.exit_code == 1
    assert "-v who=..." in result.stderr and fake_engine.calls == []


def test_broken_template_on_the_command_line_is_one_line(cli, fake_engine):
    bad = write_user_template("greet", "user = ")
    result = cli(["ask", "-t", "greet", "hi"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and str(bad) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert cli(["ask", "hi"]).exit_code == 0  # the others keep working


def test_a_template_needing_no_input_runs_without_input(cli, fake_engine):
    write_user_template("joke", 'input = false\nuser = "Tell a joke."')
    result = cli(["ask", "-t", "joke"])
    assert result.exit_code == 0, result.stderr
    assert fake_engine.calls[0][-1]["content"] == "Tell a joke."


# ---------------------------------------------------------------- gptcli templates ...

def test_templates_list_shows_source_and_description(cli):
    write_user_template("greet", GREETING)
    write_user_template("ask", 'description = "My ask."\nuser = "{input}"')
    result = cli(["templates", "list"])
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert set(SHIPPED) | {"greet"} <= set(lines)
    assert "built-in" in lines["support"] and "Reply to a customer" in lines["support"]
    assert "user" in lines["greet"] and "Greets someone." in lines["greet"]
    assert "overrides built-in" in lines["ask"] and "My ask." in lines["ask"]


def test_templates_list_json(cli):
    write_user_template("greet", GREETING)
    bad = write_user_template("broken", "user = 3")
    result = cli(["templates", "list", "--json"])
    assert result.exit_code == 0
    records = {r["name"]: r for r in json.loads(result.stdout)}
    assert records["support"]["source"] == "built-in"
    assert records["greet"]["variables"][0] == {"name": "who", "description": "the person to greet", "default": None, "required": True}
    assert str(bad) in records["broken"]["error"]


def test_templates_list_reports_a_broken_file_and_lists_the_rest(cli):
    bad = write_user_template("broken", "user = 3")
    result = cli(["templates", "list"])
    assert result.exit_code == 0
    assert "broken" in result.stdout and "ask" in result.stdout
    assert str(bad) in result.stderr


def test_templates_show(cli):
    result = cli(["templates", "show", "support"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("support (built-in): ") and str(builtin_dir() / "support.toml") in out
    assert "company" in out and "default: 'our company'" in out
    assert "System prompt:" in out and "User prompt:" in out and "{input}" in out
    raw = cli(["templates", "show", "support", "--raw"]).stdout
    assert raw == (builtin_dir() / "support.toml").read_text(encoding="utf-8")


def test_templates_show_unknown(cli):
    result = cli(["templates", "show", "nope"])
    assert result.exit_code == 1 and "unknown template 'nope'" in result.stderr


def test_templates_render_prints_the_messages(cli):
    result = cli(["templates", "render", "rewrite", "-v", "goal=shorter", "--json"], stdin="Keep {this} literal.")
    assert result.exit_code == 0, result.stderr
    messages = json.loads(result.stdout)
    assert messages[0]["role"] == "system" and "shorter" in messages[0]["content"]
    assert "Keep {this} literal." in messages[-1]["content"]


def test_templates_path(cli):
    assert cli(["templates", "path"]).stdout.strip() == str(user_dir())
    assert cli(["templates", "path", "--builtin"]).stdout.strip() == str(builtin_dir())
    assert cli(["templates", "path", "draft"]).stdout.strip() == str(builtin_dir() / "draft.toml")
    write_user_template("draft", 'user = "{input}"')
    assert cli(["templates", "path", "draft"]).stdout.strip() == str(user_dir() / "draft.toml")


def editor_script(tmp_path: Path, body: str) -> str:
    """An $EDITOR that runs ``body`` with the file as $1 and records that it ran."""
    script = tmp_path / "editor.sh"
    script.write_text(f"#!/bin/sh\necho \"$1\" >> {tmp_path}/edited\n{body}\n")
    script.chmod(0o755)
    return str(script)


def test_templates_new_writes_a_scaffold_and_opens_the_editor(cli, fake_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, 'sed -i "s/plain, concise/pirate/" "$1"'))
    result = cli(["templates", "new", "standup"])
    assert result.exit_code == 0, result.stderr
    path = user_dir() / "standup.toml"
    assert (tmp_path / "edited").read_text().strip() == str(path)
    assert path.read_text().startswith("# gptcli prompt template")
    assert stat.S_IMODE(user_dir().stat().st_mode) == 0o700
    # the edited template is usable at once
    assert cli(["ask", "-t", "standup", "what did I do"]).exit_code == 0
    assert "pirate" in fake_engine.calls[0][0]["content"]
    listed = cli(["templates", "list"]).stdout
    assert "standup" in listed and "user" in listed


def test_templates_new_refuses_to_overwrite_or_shadow(cli, monkeypatch):
    monkeypatch.setenv("EDITOR", "true")
    assert cli(["templates", "new", "standup"]).exit_code == 0
    again = cli(["templates", "new", "standup"])
    assert again.exit_code == 1 and "already exists" in again.stderr
    builtin = cli(["templates", "new", "support"])
    assert builtin.exit_code == 1 and "templates edit support" in builtin.stderr
    bad = cli(["templates", "new", "../evil"])
    assert bad.exit_code == 2 and "not a template name" in bad.stderr
    assert not (user_dir().parent / "evil.toml").exists()


def test_templates_new_reports_a_broken_edit_and_keeps_the_file(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, 'echo "user = " > "$1"'))
    result = cli(["templates", "new", "oops"])
    path = user_dir() / "oops.toml"
    assert result.exit_code == 1
    assert str(path) in result.stderr and "templates edit oops" in result.stderr
    assert path.exists()


def test_templates_new_without_an_editor_prints_the_path(cli, monkeypatch):
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)
    result = cli(["templates", "new", "plain"])
    assert result.exit_code == 0
    assert str(user_dir() / "plain.toml") in result.stderr and "$EDITOR" in result.stderr


def test_templates_edit_copies_a_builtin_first(cli, fake_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITOR", editor_script(tmp_path, 'sed -i "s/our company/Acme Lamps/" "$1"'))
    result = cli(["templates", "edit", "support"])
    assert result.exit_code == 0, result.stderr
    copy = user_dir() / "support.toml"
    assert copy.exists() and "Acme Lamps" in copy.read_text()
    assert "Acme Lamps" not in (builtin_dir() / "support.toml").read_text()
    cli(["support", "Where is my order?"])
    assert "Acme Lamps" in fake_engine.calls[0][0]["content"]
    # editing again opens the user's copy, not a fresh one
    monkeypatch.setenv("EDITOR", "true")
    assert cli(["templates", "edit", "support"]).exit_code == 0
    assert "Acme Lamps" in copy.read_text()


def test_templates_edit_unknown_and_failing_editor(cli, monkeypatch):
    monkeypatch.setenv("EDITOR", "true")
    unknown = cli(["templates", "edit", "nope"])
    assert unknown.exit_code == 1 and "templates new nope" in unknown.stderr
    monkeypatch.setenv("EDITOR", "false")
    failed = cli(["templates", "edit", "ask"])
    assert failed.exit_code == 1 and "exited with status 1" in failed.stderr
    monkeypatch.setenv("EDITOR", "/no/such/editor")
    missing = cli(["templates", "edit", "ask"])
    assert missing.exit_code == 1 and "cannot start the editor" in missing.stderr


def test_every_templates_subcommand_has_help_with_an_example(cli, capsys):
    for sub in ["list", "show", "render", "new", "edit", "path"]:
        result = cli(["templates", sub, "--help"])
        assert result.exit_code == 0
        assert "Example:" in capsys.readouterr().out, sub


# ---------------------------------------------------------------- packaging

def test_the_built_wheel_ships_the_templates_and_they_are_found_installed(tmp_path):
    """`pip wheel --no-deps .` then look inside; install it elsewhere and load the templates from it."""
    import shutil
    import subprocess
    import zipfile

    root = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(root / "gptcli", src / "gptcli", ignore=ignore)
    shutil.copytree(root / "prompts", src / "prompts", ignore=ignore)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    wheel = next(dist.glob("gptcli-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = {Path(n).name for n in archive.namelist() if n.startswith("gptcli/prompts/") and n.endswith(".toml")}
    expected = {p.name for p in (root / "prompts").glob("*.toml")}
    assert expected and shipped == expected

    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    probe = (
        "import gptcli, gptcli.templates as t; lib = t.TemplateLibrary.load();"
        "print(gptcli.__file__); print(t.builtin_dir()); print(' '.join(sorted(lib.templates)))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    module_file, folder, names = out.stdout.splitlines()
    assert module_file.startswith(str(target)) and folder.startswith(str(target))
    assert set(names.split()) == {Path(n).stem for n in expected}
