"""Shell completion: real bash answers TAB from the scripts in completions/, which must not go stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import typer

from tests.conftest import ROOT, gptcli_executable

COMPLETIONS = ROOT / "completions"
BIN = str(Path(gptcli_executable()).parent)


def shell_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def bash_complete(words: list[str], *, env: dict[str, str] | None = None) -> list[str]:
    """What bash puts in COMPREPLY for ``words`` (the last one being completed), with the shipped script."""
    array = " ".join(f"'{w}'" for w in words)
    script = (
        f"source {COMPLETIONS / 'gptcli.bash'}\n"
        f"COMP_WORDS=({array}); COMP_CWORD={len(words) - 1}\n"
        "_gptcli_completion gptcli\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, env=env or shell_env(), timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def program_complete(shell: str, line: str) -> str:
    """The program's side of zsh's and fish's protocol (those shells need not be installed)."""
    extra = {"_GPTCLI_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": line}
    if shell == "fish":
        extra["_TYPER_COMPLETE_FISH_ACTION"] = "get-args"
    proc = subprocess.run([gptcli_executable()], capture_output=True, text=True, env=shell_env(**extra), timeout=60)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def top_level_commands() -> list[str]:
    from gptcli.cli import app

    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- a real bash, a real TAB


def test_tab_in_an_interactive_bash_completes_a_command():
    child = pexpect.spawn(
        "bash", ["--norc", "--noprofile"], env=shell_env(PS1="$ ", TERM="dumb"), encoding="utf-8", timeout=30,
        dimensions=(24, 200),
    )
    try:
        child.expect_exact("$ ")
        child.sendline(f"source {COMPLETIONS / 'gptcli.bash'}")
        child.expect_exact("$ ")
        child.send("gptcli dr\t")
        child.expect_exact("gptcli draft ")
        child.send("\x15")  # Ctrl-U: clear the line
        child.send("gptcli ask -t su\t\t")
        child.expect("summarize.*support|support.*summarize")
        child.send("\x15")
        child.send("gptcli ask -t supp\t")
        child.expect_exact("gptcli ask -t support ")
    finally:
        child.sendcontrol("c")
        child.sendline("exit")
        child.close(force=True)


@pytest.mark.parametrize("command", top_level_commands())
def test_bash_completes_every_command_from_its_first_letters(command):
    # covers `gptcli tr<TAB>` -> translate as soon as that command is registered
    assert command in bash_complete(["gptcli", command[:2]])


def test_bash_completes_draft_translate_and_options():
    assert bash_complete(["gptcli", "dr"]) == ["draft"]
    assert bash_complete(["gptcli", "tr"]) == ["translate"]
    assert {"--max-tokens", "--model"} <= set(bash_complete(["gptcli", "ask", "--m"]))
    assert bash_complete(["gptcli", "--color", "a"]) == ["auto", "always"]


def test_bash_completes_template_names_after_t():
    assert bash_complete(["gptcli", "ask", "-t", "dr"]) == ["draft"]
    assert bash_complete(["gptcli", "ask", "--template", "su"]) == ["summarize", "support"]


def test_bash_completes_the_users_own_templates(isolated_home):
    folder = isolated_home / "templates"
    folder.mkdir()
    (folder / "standup.toml").write_text('description = "Daily standup notes."\nuser = "Notes: {input}"\n')
    assert "standup" in bash_complete(["gptcli", "ask", "-t", "st"])


def test_bash_completes_model_aliases(isolated_home):
    from gptcli.models import EMBEDDED_NAME, RegisteredModel, Registry

    Registry(models={"qwen-small": RegisteredModel(name="qwen-small", path="/models/q.gguf", source="local")}).save()
    assert set(bash_complete(["gptcli", "ask", "--model", ""])) == {EMBEDDED_NAME, "qwen-small"}
    assert bash_complete(["gptcli", "ask", "-m", "qw"]) == ["qwen-small"]
    assert bash_complete(["gptcli", "ask", "-m", "./"]) == []  # a path: bash's own file completion (-o default) takes over


def test_bash_completes_session_ids_without_creating_a_history(isolated_home):
    from gptcli.store import ConversationStore, default_store_path

    assert bash_complete(["gptcli", "ask", "--session", ""]) == []
    assert not default_store_path().exists()
    with ConversationStore.open() as store:
        first = store.create_session(model="m", title="packing list").id
        second = store.create_session(model="m", title="tax letter").id
    assert set(bash_complete(["gptcli", "draft", "--session", ""])) == {first, second}
    unique = second[: len(os.path.commonprefix([first, second])) + 1]
    assert bash_complete(["gptcli", "draft", "-s", unique]) == [second]


def test_every_command_taking_a_name_completes_it(isolated_home):
    """chat -t/-s, translate --to/--from/-t, history IDs, models NAME, serve -m, --engine."""
    from gptcli.models import RegisteredModel, Registry
    from gptcli.store import ConversationStore

    Registry(models={"qwen-small": RegisteredModel(name="qwen-small", path="/models/q.gguf", source="local")}).save()
    with ConversationStore.open() as store:
        sid = store.create_session(model="m", title="packing list").id
    (isolated_home / "config.toml").write_text('[engines.gpu-box]\nbase_url = "http://127.0.0.1:9/v1"\n')
    assert bash_complete(["gptcli", "chat", "-t", "supp"]) == ["support"]
    assert bash_complete(["gptcli", "chat", "-s", ""]) == [sid]
    assert "German" in bash_complete(["gptcli", "translate", "--to", "Germ"])
    assert "de" in bash_complete(["gptcli", "translate", "x.md", "--from", "d"])
    assert bash_complete(["gptcli", "translate", "-t", "transl"]) == ["translate"]
    for sub in ("show", "export", "rm", "rename"):
        assert bash_complete(["gptcli", "history", sub, sid[:3]]) == [sid], sub
    for sub in ("info", "rm", "default"):
        assert bash_complete(["gptcli", "models", sub, "qw"]) == ["qwen-small"], sub
    assert bash_complete(["gptcli", "serve", "--model", "qw"]) == ["qwen-small"]
    assert bash_complete(["gptcli", "ask", "--engine", ""]) == ["local", "remote", "gpu-box"]


def test_bash_completes_config_keys_and_choice_values():
    assert bash_complete(["gptcli", "config", "set", "tem"]) == ["temperature"]
    assert bash_complete(["gptcli", "config", "set", "overflow", ""]) == ["summarize", "drop", "stop"]
    assert bash_complete(["gptcli", "config", "set", "history", "f"]) == ["false"]
    assert bash_complete(["gptcli", "config", "unset", "max_t"]) == ["max_tokens"]


def test_zsh_and_fish_get_values_with_their_help():
    zsh = program_complete("zsh", "gptcli ask -t su")
    assert '"support":"Reply to a customer' in zsh and '"summarize":' in zsh
    assert len(zsh.strip().splitlines()) == 2  # one line per candidate: multi-line help would break zsh's list
    fish = program_complete("fish", "gptcli dra")
    assert fish.startswith("draft\t") and "notes" in fish


# ---------------------------------------------------------------- the completers themselves


def test_language_completer_offers_codes_and_names():
    from gptcli.cli.completion import complete_language

    values = [value for value, _ in complete_language("fr")]
    assert "fr" in values and "fr-CA" in values
    assert [value for value, _ in complete_language("Fren")] == ["French"]
    assert all(" " not in value for value, _ in complete_language(""))  # a value with a space breaks bash


def test_completers_never_raise_on_broken_files(isolated_home):
    from gptcli.cli.completion import complete_model, complete_session, complete_template

    (isolated_home / "models.json").write_text("{not json")
    (isolated_home / "history.db").write_text("not a database")
    folder = isolated_home / "templates"
    folder.mkdir()
    (folder / "broken.toml").write_text("user = ")
    assert complete_session("") == []
    assert [v for v, _ in complete_model("")] == ["smollm2-135m"]
    assert "draft" in [v for v, _ in complete_template("")]


def test_completion_does_not_import_the_heavy_libraries(isolated_home):
    """TAB must answer fast: no llama_cpp or huggingface_hub import while completing."""
    from gptcli.store import ConversationStore

    ConversationStore.open().close()
    probe = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write('HEAVY=' + ','.join(m for m in ('llama_cpp', 'huggingface_hub', 'openai') if m in sys.modules)))\n"
        "from gptcli.cli import main\n"
        "main()\n"
    )
    for words, cword in (("gptcli ask -m ", 3), ("gptcli ask -t ", 3), ("gptcli ask -s ", 3), ("gptcli dr", 1)):
        env = shell_env(_GPTCLI_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=str(cword))
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.strip().endswith("HEAVY="), (words, proc.stderr)


# ---------------------------------------------------------------- the scripts


def test_completion_scripts_are_up_to_date():
    proc = subprocess.run([sys.executable, str(COMPLETIONS / "generate"), "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_generate_notices_a_stale_script(tmp_path):
    copy = tmp_path / "completions"
    shutil.copytree(COMPLETIONS, copy)
    (copy / "_gptcli").write_text("#compdef gptcli\n# an old script\n")
    stale = subprocess.run([sys.executable, str(copy / "generate"), "--check"], capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1 and "_gptcli" in stale.stderr
    subprocess.run([sys.executable, str(copy / "generate")], check=True, capture_output=True, timeout=60)
    assert (copy / "_gptcli").read_text() == (COMPLETIONS / "_gptcli").read_text()


@pytest.mark.parametrize(("shell", "name"), [("bash", "gptcli.bash"), ("zsh", "_gptcli"), ("fish", "gptcli.fish")])
def test_show_completion_prints_the_shipped_script(run_gptcli, shell, name):
    proc = run_gptcli("--show-completion", shell, env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (COMPLETIONS / name).read_text()


def test_install_completion_works_as_in_typer(run_gptcli, tmp_path):
    home = tmp_path / "user"
    home.mkdir()
    proc = run_gptcli(
        "--install-completion", "bash", env={"HOME": str(home), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    )
    assert proc.returncode == 0, proc.stderr
    installed = home / ".bash_completions" / "gptcli.sh"
    assert installed.read_text().strip() == (COMPLETIONS / "gptcli.bash").read_text().strip()
    assert f"source '{installed}'" in (home / ".bashrc").read_text()
    # and the installed script answers in a bash that reads that .bashrc
    script = 'source ~/.bashrc; COMP_WORDS=(gptcli dr); COMP_CWORD=1; _gptcli_completion gptcli; echo "${COMPREPLY[@]}"'
    out = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], capture_output=True, text=True, env=shell_env(HOME=str(home)), timeout=60)
    assert out.stdout.strip() == "draft"


@pytest.mark.parametrize(("shell", "installed"), [("zsh", ".zfunc/_gptcli"), ("fish", ".config/fish/completions/gptcli.fish")])
def test_install_completion_installs_for_the_shell_named_not_the_one_detected(run_gptcli, tmp_path, shell, installed):
    home = tmp_path / "user"
    home.mkdir()
    proc = run_gptcli("--install-completion", shell, env={"HOME": str(home), "SHELL": "/bin/bash"})
    assert proc.returncode == 0, proc.stderr
    assert f"{shell} completion installed" in proc.stdout
    assert (home / installed).is_file()
    assert not (home / ".bash_completions").exists() and not (home / ".bashrc").exists()
    unknown = run_gptcli("--install-completion", "tcsh", env={"HOME": str(home)})
    assert unknown.returncode == 2 and unknown.stderr.strip() == (
        "error: unknown shell 'tcsh' for --install-completion (one of: bash, zsh, fish, powershell, pwsh)"
    )
