"""`gptcli models pull` against a real HTTP server on 127.0.0.1 that answers like the Hugging Face Hub."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import types
from pathlib import Path

import pytest

from gptcli.models import Registry
from tests.hubserver import FakeHub, loaded, split_gguf, tiny_gguf  # noqa: F401 (fixture)

REPO = "acme/tiny-GGUF"


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small valid GGUF files, one per quantization, plus a three-part split model."""
    folder = tmp_path_factory.mktemp("ggufs")
    files = {q: tiny_gguf(folder / f"tiny-{q}.gguf", quant=q, rows=64).read_bytes() for q in ("Q8_0", "Q4_K_M", "Q5_K_M", "Q4_K_S", "Q6_K")}
    for i in (1, 2, 3):
        files[f"split{i}"] = tiny_gguf(folder / f"big-Q4_K_M-{i:05d}-of-00003.gguf", split=(i, 3), rows=32).read_bytes()
    files["large"] = tiny_gguf(folder / "large-Q4_K_M.gguf", rows=20_000).read_bytes()  # 640 kB of tensors
    return files


def quant_repo(hub: FakeHub, ggufs: dict[str, bytes], quants: tuple[str, ...] = ("Q8_0", "Q4_K_M", "Q5_K_M"), repo: str = REPO):
    files: dict[str, bytes | Path] = {f"tiny-{q}.gguf": ggufs[q] for q in quants}
    files["README.md"] = b"# tiny\n"
    return hub.add_repo(repo, files)


def cache_folder(repo: str = REPO) -> Path:
    return Path(os.environ["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))


def blob_gets(hub: FakeHub) -> list[str]:
    return [r.path for r in hub.requests if r.server == "cdn" and r.method == "GET"]


# ---------------------------------------------------------------- choosing and downloading


def test_pull_picks_q4_k_m_by_default_and_registers_it(cli, hub, ggufs):
    repo = quant_repo(hub, ggufs)
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 0, result.stderr
    assert "pulled acme/tiny-GGUF:tiny-Q4_K_M.gguf as 'tiny-q4_k_m'" in result.stderr
    assert "chose tiny-Q4_K_M.gguf" in result.stderr and "default" in result.stderr
    # only the chosen file crossed the wire, into the standard Hub cache layout
    sha = hashlib.sha256(ggufs["Q4_K_M"]).hexdigest()
    assert blob_gets(hub) == [f"/blobs/{sha}?filename=tiny-Q4_K_M.gguf"]
    snapshot = cache_folder() / "snapshots" / repo.commit / "tiny-Q4_K_M.gguf"
    assert snapshot.is_symlink() and snapshot.read_bytes() == ggufs["Q4_K_M"]
    assert Path(os.path.realpath(snapshot)) == cache_folder() / "blobs" / sha
    assert (cache_folder() / "refs" / "main").read_text() == repo.commit
    entry = Registry.load().models["tiny-q4_k_m"]
    assert (entry.repo, entry.file, entry.commit, entry.quant) == (REPO, "tiny-Q4_K_M.gguf", repo.commit, "Q4_K_M")
    assert Path(entry.path) == snapshot
    # the token-free requests huggingface_hub makes: revision info, tree, HEAD resolve
    paths = [(r.method, r.path.split("?")[0]) for r in hub.requests if r.server == "hub"]
    assert ("GET", f"/api/models/{REPO}/revision/main") in paths
    assert ("GET", f"/api/models/{REPO}/tree/{repo.commit}") in paths
    assert ("HEAD", f"/{REPO}/resolve/{repo.commit}/tiny-Q4_K_M.gguf") in paths


def test_without_q4_k_m_the_next_preference_is_chosen_and_explained(cli, hub, ggufs):
    quant_repo(hub, ggufs, ("Q8_0", "Q6_K", "Q4_K_S"))
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 0, result.stderr
    assert "tiny-Q4_K_S.gguf" in result.stderr
    assert "no Q4_K_M" in result.stderr


def test_quant_and_file_options_override_the_choice(cli, hub, ggufs):
    quant_repo(hub, ggufs)
    by_quant = cli(["models", "pull", REPO, "--quant", "q8_0"])
    assert by_quant.exit_code == 0, by_quant.stderr
    assert "tiny-Q8_0.gguf as 'tiny-q8_0'" in by_quant.stderr
    by_file = cli(["models", "pull", REPO, "--file", "tiny-Q5_K_M.gguf", "--alias", "five"])
    assert by_file.exit_code == 0, by_file.stderr
    assert "as 'five'" in by_file.stderr
    assert sorted(Registry.load().models) == ["five", "tiny-q8_0"]


def test_a_missing_quantization_lists_the_ones_there(cli, hub, ggufs):
    quant_repo(hub, ggufs)
    result = cli(["models", "pull", REPO, "--quant", "Q2_K"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: repository 'acme/tiny-GGUF' has no Q2_K file; quantizations available: Q4_K_M, Q5_K_M, Q8_0"
    )
    assert blob_gets(hub) == [] and Registry.load().models == {}


def test_split_model_downloads_every_part_and_registers_the_first(cli, hub, ggufs):
    hub.page_size = 2  # the tree listing comes in pages (Link: rel="next")
    files: dict[str, bytes | Path] = {f"Q4_K_M/big-Q4_K_M-{i:05d}-of-00003.gguf": ggufs[f"split{i}"] for i in (1, 2, 3)}
    files["tiny-Q8_0.gguf"] = ggufs["Q8_0"]
    repo = hub.add_repo(REPO, files)
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 0, result.stderr
    assert "in 3 parts" in result.stderr
    assert "pulled acme/tiny-GGUF:Q4_K_M/big-Q4_K_M-00001-of-00003.gguf as 'big-q4_k_m'" in result.stderr
    assert len(blob_gets(hub)) == 3
    assert sum("cursor=" in r.path for r in hub.requests) >= 1  # pagination was followed
    entry = Registry.load().models["big-q4_k_m"]
    snapshot = cache_folder() / "snapshots" / repo.commit / "Q4_K_M"
    assert entry.path == str(snapshot / "big-Q4_K_M-00001-of-00003.gguf")
    assert [Path(p).name for p in entry.parts] == [f"big-Q4_K_M-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    info = cli(["models", "info", "big-q4_k_m", "--json"])
    data = json.loads(info.stdout)
    assert data["split_parts"] == 3 and len(data["files"]) == 3
    assert data["parameters"] == 3 * (32 * 8 + 8)  # tensors of all three parts
    removed = cli(["models", "rm", "big-q4_k_m", "--yes"])
    assert removed.exit_code == 0 and "deleted 3 files" in removed.stderr
    assert not cache_folder().exists()


def test_an_incomplete_split_set_is_not_pulled(cli, hub, ggufs):
    hub.add_repo(REPO, {f"big-Q4_K_M-{i:05d}-of-00003.gguf": ggufs[f"split{i}"] for i in (1, 2)})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1
    assert "incomplete split" in result.stderr and "2 of 3 parts" in result.stderr
    assert blob_gets(hub) == []


def test_pulling_again_downloads_nothing(cli, hub, ggufs):
    quant_repo(hub, ggufs)
    assert cli(["models", "pull", REPO]).exit_code == 0
    again = cli(["models", "pull", REPO])
    assert again.exit_code == 0, again.stderr
    assert "already downloaded" in again.stderr
    assert len(blob_gets(hub)) == 1
    assert list(Registry.load().models) == ["tiny-q4_k_m"]


def test_a_taken_alias_is_refused_before_downloading(cli, hub, ggufs):
    quant_repo(hub, ggufs)
    assert cli(["models", "pull", REPO, "--alias", "mine"]).exit_code == 0
    clash = cli(["models", "pull", REPO, "--quant", "Q8_0", "--alias", "mine"])
    assert clash.exit_code == 2
    assert "alias 'mine' is already taken by acme/tiny-GGUF:tiny-Q4_K_M.gguf" in clash.stderr
    assert len(blob_gets(hub)) == 1


# ---------------------------------------------------------------- errors


def test_unknown_repository_is_a_clear_error(cli, hub):
    result = cli(["models", "pull", "acme/nothing-here"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: repository 'acme/nothing-here' was not found on http://127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not cache_folder("acme/nothing-here").exists()


def test_unknown_file_is_a_clear_error(cli, hub, ggufs):
    quant_repo(hub, ggufs)
    result = cli(["models", "pull", REPO, "--file", "nope.gguf"])
    assert result.exit_code == 1
    assert "has no GGUF file 'nope.gguf'" in result.stderr and "tiny-Q4_K_M.gguf" in result.stderr


def test_a_file_the_hub_answers_404_for_is_a_clear_error(hub, ggufs):
    """The resolve endpoint's 404 (X-Error-Code: EntryNotFound) as huggingface_hub raises it."""
    from gptcli.errors import ModelError
    from gptcli.hub import download_file

    repo = quant_repo(hub, ggufs)
    with pytest.raises(ModelError, match=r"^file 'gone.gguf' was not found in repository 'acme/tiny-GGUF'$"):
        download_file(REPO, "gone.gguf", repo.commit)


def test_unknown_revision_is_a_clear_error(cli, hub, ggufs):
    quant_repo(hub, ggufs)
    result = cli(["models", "pull", REPO, "--revision", "v9"])
    assert result.exit_code == 1
    assert "revision 'v9' was not found in repository 'acme/tiny-GGUF'" in result.stderr


def test_a_repository_without_gguf_files_says_so(cli, hub):
    hub.add_repo(REPO, {"model.safetensors": b"\0" * 64, "config.json": b"{}"})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1 and "has no GGUF files" in result.stderr


def test_a_malformed_repo_id_is_a_usage_error(cli, hub):
    result = cli(["models", "pull", "just-a-name"])
    assert result.exit_code == 2 and "OWNER/NAME" in result.stderr
    assert hub.requests == []


def test_gated_repository_needs_a_token_which_is_never_printed(cli, hub, ggufs, monkeypatch):
    secret = "hf_sEcReT0123456789abcdef"
    hub.token = secret
    hub.echo_auth_in_errors = True  # even a server that repeats the header back cannot make us print it
    files: dict[str, bytes | Path] = {"tiny-Q4_K_M.gguf": ggufs["Q4_K_M"]}
    hub.add_repo("acme/gated-GGUF", files, gated=True)

    anonymous = cli(["models", "pull", "acme/gated-GGUF"])
    assert anonymous.exit_code == 1
    assert "is gated" in anonymous.stderr and "HF_TOKEN" in anonymous.stderr

    monkeypatch.setenv("HF_TOKEN", "hf_wrongWRONGwrong000000")
    wrong = cli(["--verbose", "models", "pull", "acme/gated-GGUF"])
    assert wrong.exit_code == 1
    assert "no access" in wrong.stderr
    assert "hf_wrongWRONGwrong000000" not in wrong.stdout + wrong.stderr

    monkeypatch.setenv("HF_TOKEN", secret)
    ok = cli(["--verbose", "models", "pull", "acme/gated-GGUF"])
    assert ok.exit_code == 0, ok.stderr
    assert secret not in ok.stdout + ok.stderr
    sent = [r for r in hub.requests if r.server == "hub" and r.headers.get("authorization") == f"Bearer {secret}"]
    assert sent, "the token was not sent to the Hub"
    cdn = [r for r in hub.requests if r.server == "cdn"]
    assert cdn and all("authorization" not in r.headers for r in cdn), "the token leaked to the CDN"
    registry_text = (Path(os.environ["GPTCLI_HOME"]) / "models.json").read_text()
    assert secret not in registry_text


@pytest.fixture
def big_model() -> tuple[Path, bytes]:
    """The embedded GGUF (98 MB): bigger than huggingface_hub's 10 MiB write chunks, as real models are."""
    from gptcli.models import embedded_model_path

    path = embedded_model_path()
    return path, path.read_bytes()


def test_a_cut_off_download_is_resumed_by_the_next_pull(cli, hub, big_model, monkeypatch):
    import huggingface_hub.file_download as fd
    from huggingface_hub import constants

    monkeypatch.setattr(fd, "time", types.SimpleNamespace(sleep=lambda s: None))  # its retry pauses
    path, data = big_model
    repo = hub.add_repo(REPO, {"big-Q4_1.gguf": path})
    cut = 40_000_000
    hub.cut_at = cut  # every connection drops at this byte; the retries within the pull get nothing more
    first = cli(["models", "pull", REPO])
    assert first.exit_code == 1
    assert "was cut off at" in first.stderr and "run the same pull again to resume" in first.stderr
    assert len(first.stderr.strip().splitlines()) <= 2  # a notice and the error, no retry chatter
    assert Registry.load().models == {}
    sha = hashlib.sha256(data).hexdigest()
    partial = cache_folder() / "blobs" / f"{sha}.incomplete"
    kept = partial.stat().st_size
    assert kept == cut // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE > 0
    assert not (cache_folder() / "snapshots" / repo.commit / "big-Q4_1.gguf").exists()

    hub.cut_at = None
    before = len(hub.requests)
    second = cli(["models", "pull", REPO])
    assert second.exit_code == 0, second.stderr
    assert "resuming big-Q4_1.gguf at 31.5 MB" in second.stderr
    gets = [r for r in hub.requests[before:] if r.server == "cdn" and r.method == "GET"]
    assert [r.headers.get("range") for r in gets] == [f"bytes={kept}-"]
    blob = cache_folder() / "blobs" / sha
    assert blob.read_bytes() == data and not partial.exists()
    assert "big-q4_1" in Registry.load().models


def test_a_connection_dropped_once_is_resumed_within_the_same_pull(cli, hub, big_model, monkeypatch):
    import huggingface_hub.file_download as fd
    from huggingface_hub import constants

    monkeypatch.setattr(fd, "time", types.SimpleNamespace(sleep=lambda s: None))
    path, data = big_model
    hub.add_repo(REPO, {"big-Q4_1.gguf": path})
    hub.cut_at = 50_000_000
    original_find = hub.find_blob
    calls = []

    def heal_after_first(sha: str):
        calls.append(sha)
        if len(calls) > 1:
            hub.cut_at = None
        return original_find(sha)

    hub.find_blob = heal_after_first  # type: ignore[method-assign]
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 0, result.stderr
    ranges = [r.headers.get("range") for r in hub.requests if r.server == "cdn"]
    kept = 50_000_000 // constants.DOWNLOAD_CHUNK_SIZE * constants.DOWNLOAD_CHUNK_SIZE
    assert ranges == [None, f"bytes={kept}-"]
    assert Path(Registry.load().models["big-q4_1"].path).read_bytes() == data


def test_a_corrupt_transfer_is_rejected_and_nothing_registered(cli, hub, ggufs):
    repo = quant_repo(hub, ggufs, ("Q4_K_M",))
    damaged = bytearray(ggufs["Q4_K_M"])
    damaged[-10] ^= 0xFF
    repo.files["tiny-Q4_K_M.gguf"].serve_instead = bytes(damaged)
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1
    assert "corrupt" in result.stderr and "nothing was registered" in result.stderr
    assert Registry.load().models == {}
    assert not list((cache_folder() / "blobs").glob("*")), "a corrupt blob stayed in the cache"


def test_a_file_that_is_not_gguf_is_rejected_and_nothing_registered(cli, hub):
    hub.add_repo(REPO, {"fake-Q4_K_M.gguf": b"<html>this is an error page, not a model</html>" * 20})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1
    assert "is not a usable GGUF model" in result.stderr and "GGUF magic" in result.stderr
    assert "nothing was registered" in result.stderr
    assert Registry.load().models == {}
    assert not cache_folder().exists() or not any(cache_folder().rglob("*.gguf"))


def test_a_truncated_gguf_is_rejected(cli, hub, ggufs):
    hub.add_repo(REPO, {"cut-Q4_K_M.gguf": ggufs["large"][: len(ggufs["large"]) // 2]})
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1 and "truncated" in result.stderr
    assert Registry.load().models == {}


# ---------------------------------------------------------------- offline


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Any attempt to open a connection fails the test (and is recorded)."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise AssertionError(f"a network connection was attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_offline_mode_makes_no_request_and_pulled_models_keep_working(cli, hub, ggufs, monkeypatch, loaded):
    quant_repo(hub, ggufs)
    assert cli(["models", "pull", REPO]).exit_code == 0
    served = len(hub.requests)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.MonkeyPatch.context() as guard:
        attempts: list[object] = []

        def refuse(self: socket.socket, address: object) -> None:
            attempts.append(address)
            raise OSError("network is off in this test")

        guard.setattr(socket.socket, "connect", refuse)
        guard.setattr(socket.socket, "connect_ex", refuse)
        pulled = cli(["models", "pull", REPO])
        assert pulled.exit_code == 1
        assert "offline mode is on" in pulled.stderr
        for args in (
            ["models", "list"],
            ["models", "info", "tiny-q4_k_m"],
            ["models", "info", REPO],
            ["models", "default", "tiny-q4_k_m"],
            ["ask", "hello", "--model", f"{REPO}:tiny-Q4_K_M.gguf"],
        ):
            result = cli(args)
            assert result.exit_code == 0, (args, result.stderr)
        assert attempts == []
    assert len(hub.requests) == served
    assert loaded and loaded[-1].name == "tiny-Q4_K_M.gguf"


def test_the_offline_flag_refuses_to_pull_without_a_request(cli, hub, ggufs, no_network):
    quant_repo(hub, ggufs)
    result = cli(["models", "pull", REPO, "--offline"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "error: cannot pull 'acme/tiny-GGUF': offline mode is on (HF_HUB_OFFLINE=1 or --offline); "
        "models already pulled keep working"
    )
    assert no_network == [] and hub.requests == []


def test_an_unreachable_hub_is_a_clear_error(cli, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    result = cli(["models", "pull", REPO])
    assert result.exit_code == 1
    assert f"cannot reach the Hub at http://127.0.0.1:{port}" in result.stderr


# ---------------------------------------------------------------- the executable: progress bar, real model


def test_progress_bar_on_a_terminal_only(hub, ggufs, gptcli_bin, run_gptcli):
    import pexpect

    hub.add_repo(REPO, {"large-Q4_K_M.gguf": ggufs["large"]})
    env = {**os.environ, **hub.env(), "COLUMNS": "100"}
    child = pexpect.spawn(gptcli_bin, ["models", "pull", REPO], env=env, encoding="utf-8", timeout=60, dimensions=(24, 100))
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "100%" in child.before and "large-Q4_K_M.gguf" in child.before

    piped = run_gptcli("models", "pull", REPO, "--alias", "again", env=hub.env())
    assert piped.returncode == 0, piped.stderr
    assert "100%" not in piped.stderr and "\r" not in piped.stderr


@pytest.mark.model
def test_pull_the_real_model_and_answer_with_it(hub, run_gptcli):
    """The embedded SmolLM2 GGUF, served by the fake Hub, pulled, then used by alias and by repository."""
    from gptcli.models import embedded_model_path

    hub.add_repo("acme/SmolLM2-135M-Instruct-GGUF", {"SmolLM2-135M-Instruct-Q4_1.gguf": embedded_model_path(), "README.md": b"hi"})
    env = hub.env()
    pulled = run_gptcli("models", "pull", "acme/SmolLM2-135M-Instruct-GGUF", "--alias", "smol", env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert "the only GGUF model in the repository" in pulled.stderr

    offline = {"HF_HUB_OFFLINE": "1"}
    by_alias = run_gptcli("ask", "Name a colour.", "--model", "smol", "-n", "8", "--ctx", "512", "--seed", "1", env=offline)
    assert by_alias.returncode == 0, by_alias.stderr
    assert by_alias.stdout.strip()
    by_repo = run_gptcli("ask", "Name a colour.", "--model", "acme/SmolLM2-135M-Instruct-GGUF", "-n", "8", "--ctx", "512", "--seed", "1", env=offline)
    assert by_repo.returncode == 0, by_repo.stderr
    assert by_repo.stdout == by_alias.stdout  # the same file, the same seed

    listed = run_gptcli("models", "list", "--json", env=offline)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["smol"]["quantization"] == "Q4_1" and rows["smol"]["architecture"] == "llama"
    assert rows["smol"]["size"] == embedded_model_path().stat().st_size

    removed = run_gptcli("models", "rm", "smol", "--yes", env=offline)
    assert removed.returncode == 0, removed.stderr
    gone = run_gptcli("ask", "hi", "--model", "smol", "-n", "4", env=offline)
    assert gone.returncode == 1
    assert gone.stderr.startswith("error: unknown model 'smol'")


@pytest.mark.model
def test_a_real_split_model_is_pulled_whole_and_answers_like_the_original(hub, run_gptcli, tmp_path_factory):
    """The embedded model re-written in three parts: pulled, registered by its first part, loaded by llama.cpp."""
    from gptcli.models import embedded_model_path

    folder = tmp_path_factory.mktemp("split")
    parts = split_gguf(embedded_model_path(), folder / "SmolLM2-135M-Instruct-Q4_1.gguf", 3)
    assert [p.name for p in parts] == [f"SmolLM2-135M-Instruct-Q4_1-{i:05d}-of-00003.gguf" for i in (1, 2, 3)]
    hub.add_repo("acme/smol-split-GGUF", {p.name: p for p in parts})
    pulled = run_gptcli("models", "pull", "acme/smol-split-GGUF", "--alias", "split", env=hub.env())
    assert pulled.returncode == 0, pulled.stderr
    assert "in 3 parts" in pulled.stderr

    info = json.loads(run_gptcli("models", "info", "split", "--json").stdout)
    original = json.loads(run_gptcli("models", "info", str(embedded_model_path()), "--json").stdout)
    assert info["parameters"] == original["parameters"] and info["split_parts"] == 3
    args = ("ask", "Name a colour.", "-n", "12", "--ctx", "512", "--seed", "3")
    from_split = run_gptcli(*args, "--model", "split")
    from_original = run_gptcli(*args)
    assert from_split.returncode == 0, from_split.stderr
    assert from_split.stdout.strip() and from_split.stdout == from_original.stdout


def test_ctrl_c_during_a_download_keeps_the_part_for_the_next_pull(hub, big_model, gptcli_bin, run_gptcli):
    import signal
    import time

    path, data = big_model
    hub.add_repo(REPO, {"big-Q4_1.gguf": path})
    hub.throttle = 0.05  # about 20 MiB/s: slow enough to interrupt
    sha = hashlib.sha256(data).hexdigest()
    partial = cache_folder() / "blobs" / f"{sha}.incomplete"
    import subprocess

    proc = subprocess.Popen([gptcli_bin, "models", "pull", REPO], env={**os.environ, **hub.env()},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 20_000_000):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted at" in err and "pull again to resume" in err
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert Registry.load().models == {}

    hub.throttle = 0.0
    before = len(hub.requests)
    again = run_gptcli("models", "pull", REPO, env=hub.env())
    assert again.returncode == 0, again.stderr
    assert [r.headers.get("range") for r in hub.requests[before:] if r.server == "cdn"] == [f"bytes={kept}-"]
    assert (cache_folder() / "blobs" / sha).read_bytes() == data


def test_a_recommended_model_is_pulled_by_its_short_name_and_used_by_it(cli, hub, ggufs):
    from gptcli.models import RECOMMENDED, recommended

    short = recommended("qwen2.5-1.5b")
    assert short is not None
    hub.add_repo(short.repo, {"qwen2.5-1.5b-instruct-q8_0.gguf": ggufs["Q8_0"], "qwen2.5-1.5b-instruct-q4_k_m.gguf": ggufs["Q4_K_M"]})
    result = cli(["models", "pull", "qwen2.5-1.5b"])
    assert result.exit_code == 0, result.stderr
    assert f"pulled {short.repo}:qwen2.5-1.5b-instruct-q4_k_m.gguf as 'qwen2.5-1.5b'" in result.stderr
    info = cli(["models", "info", "qwen2.5-1.5b", "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["repo"] == short.repo
    # the help names every short name the registry knows
    import typer

    from gptcli.cli import app

    pull = typer.main.get_command(app).commands["models"].commands["pull"]  # type: ignore[attr-defined]
    text = next(p.help for p in pull.params if p.name == "repo")
    assert all(r.name in text for r in RECOMMENDED)


def test_a_recommended_model_not_yet_pulled_says_how_to_get_it(cli, fake_engine):
    from gptcli.models import resolve_model
    from gptcli.errors import ModelError

    with pytest.raises(ModelError, match=r"run `gptcli models pull llama3.2-3b` first"):
        resolve_model("llama3.2-3b")


def test_a_recommended_model_pulled_by_its_repository_is_found_by_its_short_name(cli, hub, ggufs):
    from gptcli.models import recommended, resolve_model

    short = recommended("llama3.2-3b")
    assert short is not None
    hub.add_repo(short.repo, {"Llama-3.2-3B-Instruct-Q4_K_M.gguf": ggufs["Q4_K_M"]})
    assert cli(["models", "pull", short.repo]).exit_code == 0
    ref = resolve_model("llama3.2-3b")
    assert ref.path.name == "Llama-3.2-3B-Instruct-Q4_K_M.gguf"
