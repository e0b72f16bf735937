"""Hostile input, round two (issue 26): each attack reproduced against the real pieces it targets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gptcli.models import Registry
from tests.hubserver import FakeHub, tiny_gguf  # noqa: F401

REPO = "acme/tiny-GGUF"


# ---------------------------------------------------------------- a hostile Hub


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-Q4_K_M.gguf").read_bytes()


@pytest.mark.parametrize("etag", ["../../../../victim", "..", "a/b", ".hidden"])
def test_a_hub_etag_with_a_path_never_writes_outside_the_cache(cli, hub, small_gguf, tmp_path, etag):
    victim = Path(os.environ["HF_HOME"]) / "victim"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_text("precious")
    before = {p for p in tmp_path.parent.rglob("*")}
    hub.etag = etag
    hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": small_gguf})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1, result.stdout
    assert "unsafe ETag" in result.stderr and "Traceback" not in result.stderr
    assert victim.read_text() == "precious"
    assert Registry.load().models == {}
    assert not hub.downloads(), "a file was downloaded for a hostile ETag"
    assert {p for p in tmp_path.parent.rglob("*")} == before


def test_a_hub_commit_or_file_name_with_a_path_is_refused(cli, hub, small_gguf):
    repo = hub.add_repo(REPO, {"tiny-Q4_K_M.gguf": small_gguf})
    repo.commit = "../../../escaped"
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1 and "unsafe commit id" in result.stderr
    hub.add_repo("acme/other-GGUF", {"../../evil-Q4_K_M.gguf": small_gguf, "/abs-Q4_K_M.gguf": small_gguf})
    result = cli(["models", "pull", "acme/other-GGUF"])
    assert result.exit_code == 1 and "no GGUF files" in result.stderr, result.stderr
    assert not hub.downloads() and Registry.load().models == {}


def test_server_names_are_checked_before_they_touch_a_path():
    from gptcli.errors import ModelError
    from gptcli.hub import check_server_name

    for kind, bad in [("etag", "../x"), ("etag", "x/y"), ("etag", ""), ("commit", "main/../x"), ("file", "a/../../b"),
                      ("file", "/etc/passwd"), ("file", "a\\b"), ("file", "a//b"), ("file", "x\ny")]:
        with pytest.raises(ModelError):
            check_server_name(kind, bad, REPO)
    assert check_server_name("etag", "a" * 64, REPO) and check_server_name("file", "Q4/m-Q4_K_M.gguf", REPO)
