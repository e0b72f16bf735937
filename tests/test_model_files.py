"""Broken and hostile model files: one clear error line, no crash, no hang."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time

import pytest

from gptcli.errors import ModelError
from gptcli.ggufinfo import read_gguf
from gptcli.models import embedded_model_path


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (os.urandom(4096), "magic"),
        (header(2**60, 1) + b"\0" * 64, "absurd tensor count"),
        (header(1, 2**62) + b"\0" * 64, "absurd metadata count"),
        (header(0, 1) + struct.pack("<Q", 2**40) + b"k" * 32, "absurd string length"),
        (header(0, 0, version=99) + b"\0" * 16, "unsupported GGUF version"),
        (header(0, 1) + struct.pack("<Q", 3) + b"key" + struct.pack("<I", 77) + b"\0" * 16, "unknown metadata value type"),
    ],
)
def test_hostile_headers_are_rejected_before_llama_cpp_sees_them(tmp_path, data, reason):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(ModelError, match=reason):
        read_gguf(path)


def test_real_header_reads_without_loading_weights():
    info = read_gguf(embedded_model_path())
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.quantization == "Q4_1"
    assert 100_000_000 < info.parameter_count < 200_000_000
    assert info.chat_template and "im_start" in info.chat_template


def with_template(tmp_path, template: str):
    out = tmp_path / "templated.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(embedded_model_path()), str(out),
         "--chat-template", template, "--force"],
        check=True, capture_output=True,
    )
    return out


@pytest.mark.model
def test_chat_template_escaping_the_sandbox_is_refused(run_gptcli, tmp_path):
    model = with_template(tmp_path, "{{ ''.__class__.__mro__[1].__subclasses__() }}{{ cycler.__init__.__globals__ }}")
    proc = run_gptcli("ask", "hi", "--model", str(model))
    assert proc.returncode == 1
    assert "chat template" in proc.stderr and "unsafe" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.model
def test_chat_template_that_never_ends_is_stopped(run_gptcli, tmp_path):
    model = with_template(tmp_path, "{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}")
    start = time.monotonic()
    proc = run_gptcli("ask", "hi", "--model", str(model), timeout=60)
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    assert "chat template ran for more than" in proc.stderr
