"""The remote engine against a scripted OpenAI-compatible server on 127.0.0.1: flags, profiles, keys, errors."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from gptcli.config import load_settings
from gptcli.engines import Sampling
from gptcli.engines.choose import open_engine, remote_config
from gptcli.engines.remote import RemoteConfig, RemoteEngine, estimate_tokens, normalize_base_url
from gptcli.errors import ConfigError, EngineError, ReplyCut
from gptcli.flow import OutputMode, generate
from gptcli.render import Env
from tests.remote_fake_server import FakeOpenAIServer

SECRET = "sk-test-5ecret-do-not-print-9f3a"


@pytest.fixture
def fake_server():
    server = FakeOpenAIServer().start()
    yield server
    server.stop()


def write_config(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote_args(server: FakeOpenAIServer, *more: str) -> list[str]:
    return ["--engine", "remote", "--base-url", server.base_url, *more]


# ---------------------------------------------------------------- streaming and options


def test_ask_streams_the_reply_and_sends_the_sampling_options(cli, fake_server):
    result = cli(["ask", "Hi there", *remote_args(fake_server), "--temperature", "0.2", "--top-k", "7",
                  "--min-p", "0.1", "--repeat-penalty", "1.3", "--seed", "5", "-n", "50"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Hello from the remote fake.\n"
    body = fake_server.chat_requests()[-1].body
    assert body["model"] == "fake-model"  # the only served model, picked without --model
    assert body["messages"][-1] == {"role": "user", "content": "Hi there"}
    assert body["stream"] is True
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.2, 5, 50)
    assert (body["top_k"], body["min_p"], body["repeat_penalty"]) == (7, 0.1, 1.3)


def test_max_tokens_cut_is_reported_as_length(cli, fake_server):
    result = cli(["ask", "Hi", *remote_args(fake_server), "-n", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    import json

    done = json.loads(result.stdout.splitlines()[-1])
    assert done["text"] == "Hello from "
    assert done["usage"]["finish_reason"] == "length"
    assert done["usage"]["prompt_tokens"] == 11  # the server's own usage report


def test_base_url_alone_implies_the_remote_engine_and_v1_is_added(cli, fake_server):
    result = cli(["ask", "Hi", "--base-url", f"127.0.0.1:{fake_server.port}"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "Hello from the remote fake."
    assert fake_server.chat_requests()[-1].path == "/v1/chat/completions"


def test_normalize_base_url():
    assert normalize_base_url("localhost:8080") == "http://localhost:8080/v1"
    assert normalize_base_url("https://gpu-box/v1/") == "https://gpu-box/v1"
    assert normalize_base_url("http://h:1/openai/v1") == "http://h:1/openai/v1"
    with pytest.raises(ConfigError):
        normalize_base_url("ftp://h/v1")
    with pytest.raises(ConfigError):
        normalize_base_url("http://h:99999/v1")


def test_complete_uses_the_completions_endpoint(fake_server):
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    text = "".join(c.text for c in engine.complete("Once upon", Sampling(max_tokens=3)))
    assert text == "Hello from the "
    request = fake_server.requests[-1]
    assert request.path == "/v1/completions" and request.body["prompt"] == "Once upon"


# ---------------------------------------------------------------- profiles


def test_profile_supplies_url_model_key_and_context(cli, fake_server, isolated_home, monkeypatch):
    fake_server.api_key = SECRET
    fake_server.models = ["big", "small"]
    write_config(isolated_home, f"""
[engines.gpu-box]
base_url = "{fake_server.base_url}"
model = "small"
api_key_env = "GPU_BOX_KEY"
context_length = 1024
""")
    monkeypatch.setenv("GPU_BOX_KEY", SECRET)
    result = cli(["ask", "Hi", "--engine", "gpu-box", "--stats"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "Hello from the remote fake."
    request = fake_server.chat_requests()[-1]
    assert request.body["model"] == "small"
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    assert "/1024" in result.stderr  # the stats line shows the profile's context size
    assert SECRET not in result.stdout + result.stderr


def test_flags_override_the_profile(cli, fake_server, isolated_home):
    fake_server.models = ["big", "small"]
    write_config(isolated_home, '[engines.box]\nbase_url = "http://127.0.0.1:1/v1"\nmodel = "small"\n')
    result = cli(["ask", "Hi", "--engine", "box", "--base-url", fake_server.base_url, "--model", "big"])
    assert result.exit_code == 0, result.stderr
    assert fake_server.chat_requests()[-1].body["model"] == "big"


def test_several_served_models_and_none_chosen_is_a_clear_error(cli, fake_server):
    fake_server.models = ["big", "small"]
    result = cli(["ask", "Hi", *remote_args(fake_server)])
    assert result.exit_code == 1
    assert "serves several models (big, small)" in result.stderr and "--model" in result.stderr
    assert fake_server.chat_requests() == []


def test_unknown_engine_names_the_choices(cli, isolated_home):
    write_config(isolated_home, '[engines.gpu-box]\nbase_url = "http://127.0.0.1:1/v1"\n')
    result = cli(["ask", "Hi", "--engine", "gpu-bx"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "unknown engine 'gpu-bx'" in result.stderr and "gpu-box" in result.stderr


def test_remote_without_base_url_is_a_usage_error(cli):
    result = cli(["ask", "Hi", "--engine", "remote"])
    assert result.exit_code == 2
    assert "--base-url" in result.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f'api_key_env = "{SECRET}"', "api_key_env must be the NAME of an environment variable"),
        ("context_length = 100", "context_length must be"),
        ('timeout = "soon"', "timeout must be"),
    ],
)
def test_bad_profile_values_are_named(cli, isolated_home, line, message):
    write_config(isolated_home, f'[engines.box]\nbase_url = "http://127.0.0.1:1/v1"\n{line}\n')
    result = cli(["ask", "Hi", "--engine", "box"])
    assert result.exit_code == 1
    assert "[engines.box]" in result.stderr and message in result.stderr
    assert SECRET not in result.stderr  # a key pasted by mistake is not echoed back


def test_profile_without_base_url(isolated_home):
    write_config(isolated_home, '[engines.box]\nmodel = "m"\n')
    settings = load_settings().with_flags(engine="box")
    with pytest.raises(ConfigError, match=r"\[engines.box\] has no base_url"):
        remote_config(settings)


def test_local_stays_local(isolated_home):
    assert remote_config(load_settings()) is None


# ---------------------------------------------------------------- keys


def test_401_without_a_key_names_the_variable(cli, fake_server):
    fake_server.api_key = SECRET
    result = cli(["ask", "Hi", *remote_args(fake_server)])
    assert result.exit_code == 1
    assert "requires an API key (401 Unauthorized)" in result.stderr
    assert "GPTCLI_API_KEY" in result.stderr
    assert result.stderr.count("\n") == 1


def test_401_with_a_wrong_key_says_it_was_rejected_without_showing_it(cli, fake_server, monkeypatch):
    fake_server.api_key = "the-right-key"
    monkeypatch.setenv("GPTCLI_API_KEY", SECRET)
    result = cli(["ask", "Hi", *remote_args(fake_server), "--json"])
    assert result.exit_code == 1
    assert "rejected the API key from $GPTCLI_API_KEY" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_the_key_never_reaches_output_logs_or_files(run_gptcli, fake_server, isolated_home):
    fake_server.api_key = SECRET
    env = {"GPTCLI_API_KEY": SECRET}
    ok = run_gptcli("--verbose", "ask", "Hi", *remote_args(fake_server), "--json", "--stats", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "Hello from the remote fake." in ok.stdout
    fake_server.status = 500
    failed = run_gptcli("--verbose", "ask", "Hi", *remote_args(fake_server), "--json", env=env)
    assert failed.returncode == 1
    for proc in (ok, failed):
        assert SECRET not in proc.stdout and SECRET not in proc.stderr
    for path in isolated_home.rglob("*"):  # history database, logs, caches
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert fake_server.chat_requests()[0].headers["authorization"] == f"Bearer {SECRET}"


def test_no_command_takes_a_key_on_the_command_line():
    """Keys come from the environment only: command lines end up in shell history and `ps`."""
    import typer

    from gptcli.cli import app

    def walk(command, path=()):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, (*path, name))

    offered = []
    for path, command in walk(typer.main.get_command(app)):
        for param in command.params:
            for opt in getattr(param, "opts", []):
                if re.search(r"key|secret|password|^--token$|^--auth", opt.lower()):
                    offered.append((" ".join(path), opt))
    assert offered == [("serve", "--api-key-env")]  # the NAME of a variable, never the key


# ---------------------------------------------------------------- errors


def test_unknown_model_lists_the_served_ones(cli, fake_server):
    fake_server.models = ["llama3:latest", "qwen2"]
    result = cli(["ask", "Hi", *remote_args(fake_server), "--model", "mistral"])
    assert result.exit_code == 1
    assert "model 'mistral' is not served" in result.stderr and "llama3:latest, qwen2" in result.stderr
    assert fake_server.chat_requests() == []
    ok = cli(["ask", "Hi", *remote_args(fake_server), "--model", "llama3"])  # Ollama's implicit tag
    assert ok.exit_code == 0, ok.stderr


def test_404_model_from_a_server_that_does_not_list_models(cli, fake_server):
    fake_server.models = []
    fake_server.status = 404
    fake_server.status_body = {"error": {"message": "The model `gpt-9` does not exist.", "code": "model_not_found"}}
    result = cli(["ask", "Hi", *remote_args(fake_server), "--model", "gpt-9"])
    assert result.exit_code == 1
    assert "model 'gpt-9' not found" in result.stderr


def test_429_and_5xx_are_one_clear_line(cli, fake_server):
    fake_server.status, fake_server.retry_after = 429, "7"
    busy = cli(["ask", "Hi", *remote_args(fake_server)])
    assert busy.exit_code == 1
    assert "is busy (429 Too Many Requests" in busy.stderr and "retry after 7 s" in busy.stderr
    fake_server.status, fake_server.status_body = 503, {"error": {"message": "loading model"}}
    down = cli(["ask", "Hi", *remote_args(fake_server)])
    assert down.exit_code == 1
    assert "failed (HTTP 503: loading model)" in down.stderr
    assert busy.stderr.count("\n") == down.stderr.count("\n") == 1
    assert len(fake_server.chat_requests()) == 2  # HTTP errors are not retried


def test_context_overflow_from_the_server_is_a_context_error(fake_server):
    fake_server.status = 400
    fake_server.status_body = {"error": {"message": "This model's maximum context length is 512 tokens. However, you requested 736 tokens"}}
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    from gptcli.errors import ContextOverflowError

    with pytest.raises(ContextOverflowError, match="maximum context length is 512"):
        engine.stream([{"role": "user", "content": "x"}], Sampling())


def test_connection_refused_names_the_url_quickly(cli):
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    result = cli(["ask", "Hi", "--engine", "remote", "--base-url", url])
    assert result.exit_code == 1
    assert f"cannot reach the server at {url}: connection refused" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 5  # a few bounded retries, not a long hang


def test_dropped_connections_before_the_first_token_are_retried(cli, fake_server):
    fake_server.drop_connections = 2
    result = cli(["ask", "Hi", *remote_args(fake_server)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "Hello from the remote fake."
    assert len(fake_server.chat_requests()) == 3


def test_retries_are_bounded(cli, fake_server):
    fake_server.drop_connections = 100
    result = cli(["ask", "Hi", *remote_args(fake_server)])
    assert result.exit_code == 1
    assert "cannot reach the server" in result.stderr
    assert len(fake_server.chat_requests()) == 3  # one try and two retries


def test_server_dying_mid_reply_keeps_the_partial_reply_and_does_not_retry(cli, fake_server):
    fake_server.cut_after = 2
    result = cli(["ask", "Hi", *remote_args(fake_server)])
    assert result.exit_code == 1
    assert result.stdout == "Hello from \n"  # what came is printed (and ends the line)
    assert "went away in the middle of the reply" in result.stderr
    assert len(fake_server.chat_requests()) == 1  # never resent once text was shown
    from gptcli.store import ConversationStore

    store = ConversationStore.open()
    session = store.latest_session()
    assert session is not None
    saved = store.messages(session.id)
    assert [(m.role, m.content, m.interrupted) for m in saved][-2:] == [
        ("user", "Hi", False),
        ("assistant", "Hello from ", True),
    ]
    store.close()


def test_the_partial_reply_travels_on_the_error(fake_server):
    fake_server.cut_after = 3
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    out = io.StringIO()
    with pytest.raises(ReplyCut) as caught:
        generate(engine, [{"role": "user", "content": "Hi"}], Sampling(), Env(stdout=out, stderr=io.StringIO()), OutputMode(plain=True))
    assert isinstance(caught.value.cause, EngineError)
    partial = caught.value.partial
    assert partial.text == "Hello from the "
    assert partial.interrupted and partial.usage.finish_reason == "error"
    assert out.getvalue() == "Hello from the \n"


def test_read_timeout_from_the_profile_is_not_retried(cli, fake_server, isolated_home):
    fake_server.stall = 3
    write_config(isolated_home, f'[engines.slow]\nbase_url = "{fake_server.base_url}"\ntimeout = 0.5\n')
    started = time.monotonic()
    result = cli(["ask", "Hi", "--engine", "slow"])
    assert result.exit_code == 1
    assert "timed out" in result.stderr and "timeout" in result.stderr
    assert time.monotonic() - started < 2.5
    assert len(fake_server.chat_requests()) == 1


def test_ctrl_c_closes_the_stream_at_once(fake_server, gptcli_bin):
    fake_server.reply = " ".join(f"word{i}" for i in range(200))
    fake_server.delay = 0.05
    proc = subprocess.Popen(
        [gptcli_bin, "ask", "Hi", *remote_args(fake_server)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=dict(os.environ), bufsize=0,
    )
    assert proc.stdout is not None
    first = b""
    while len(first) < 20:  # the reply is streaming
        first += proc.stdout.read(20)
    interrupted_at = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=10)
    assert proc.returncode == 130
    printed = (first + rest).decode()
    assert printed.startswith("word0 word1"), printed
    assert "word199" not in printed
    deadline = time.monotonic() + 3
    while not fake_server.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_server.disconnects, "the server kept streaming to a client that had stopped"
    assert fake_server.disconnects[0] - interrupted_at < 1.0


# ---------------------------------------------------------------- token counts and context


def test_token_counts_come_from_the_servers_tokenizer(fake_server):
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    assert engine.tokenize_count("one two three four") == 4  # the fake counts words
    assert engine.counts_exactly
    assert any(r.path == "/tokenize" for r in fake_server.requests)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "a b c"}]
    assert engine.count_tokens(messages) > engine.tokenize_count("be brief a b c")  # template overhead


def test_vllm_style_tokenizer(fake_server):
    fake_server.tokenizer = "vllm"
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    assert engine.tokenize_count("one two three") == 3
    assert any(r.path == "/tokenize" and "prompt" in r.body for r in fake_server.requests)


def test_without_a_tokenizer_counts_are_conservative_estimates(fake_server):
    fake_server.tokenizer = None
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert not engine.counts_exactly
    assert engine.tokenize_count(text) == estimate_tokens(text)
    assert estimate_tokens(text) >= len(text) / 4  # real tokenizers: about 4 characters per token
    assert estimate_tokens("中文翻译测试") >= 6  # at least one per CJK character


def test_context_length_profile_then_server_then_settings(fake_server):
    explicit = RemoteEngine(RemoteConfig(base_url=fake_server.base_url, context_length=1024))
    assert explicit.context_length == 1024
    asked = RemoteEngine(RemoteConfig(base_url=fake_server.base_url, fallback_context=768))
    assert asked.context_length == 2048  # /props
    fake_server.n_ctx = None
    silent = RemoteEngine(RemoteConfig(base_url=fake_server.base_url, fallback_context=768))
    assert silent.context_length == 768
    default = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    assert default.context_length == 4096


def test_ctx_flag_is_the_remote_context_length(fake_server):
    settings = load_settings().with_flags(engine="remote", base_url=fake_server.base_url, ctx=512)
    assert open_engine(settings).context_length == 512


def test_streams_from_several_threads_at_once(fake_server):
    """What translate --parallel does: one engine, several replies in flight."""
    fake_server.delay = 0.05
    engine = RemoteEngine(RemoteConfig(base_url=fake_server.base_url))
    results: dict[int, str] = {}

    def work(i: int) -> None:
        results[i] = "".join(c.text for c in engine.stream([{"role": "user", "content": f"n{i}"}], Sampling()))

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    elapsed = time.monotonic() - started
    assert all(results[i] == "Hello from the remote fake." for i in range(4))
    assert elapsed < 4 * 5 * 0.05  # overlapped, not one after another


# ---------------------------------------------------------------- translate --parallel


def test_translate_parallel_keeps_the_order_with_replies_finishing_out_of_order(cli, fake_server, tmp_path):
    """Later chunks finish first (they stream faster); the output still follows the document."""
    count = 8
    doc = tmp_path / "doc.md"
    doc.write_text("".join(f"Paragraph {i} says hello to the reader.\n\n" for i in range(count)), encoding="utf-8")

    def which(body: dict) -> int:
        found = re.search(r"Paragraph (\d+)", body["messages"][-1]["content"])
        assert found, body
        return int(found.group(1))

    fake_server.reply_fn = lambda body: f"Absatz {which(body)} grüßt den Leser."
    fake_server.delay_fn = lambda body: 0.01 * (count - which(body))
    out = tmp_path / "doc.de.md"
    result = cli(["translate", str(doc), "--to", "de", "-o", str(out), "--parallel", "4",
                  "--chunk-tokens", "8", *remote_args(fake_server)])
    assert result.exit_code == 0, result.stderr
    assert out.read_text(encoding="utf-8") == "".join(f"Absatz {i} grüßt den Leser.\n\n" for i in range(count))
    assert len(fake_server.chat_requests()) == count
    assert fake_server.max_in_flight == 4  # up to N chunks at once, never more
