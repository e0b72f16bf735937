"""`gptcli doctor`: the installed executable reporting on llama.cpp, the machine, the default model and paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.hubserver import tiny_gguf


def _checks(stdout: str) -> dict[str, dict]:
    """The report (the first JSON line; a failure adds an error event line after it)."""
    lines = stdout.splitlines()
    if len(lines) > 1:
        assert json.loads(lines[1])["type"] == "error"
    return {c["label"]: c for c in json.loads(lines[0])["checks"]}


@pytest.mark.model
def test_doctor_reports_everything_and_loads_the_default_model(run_gptcli):
    proc = run_gptcli("doctor")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for label in ("gptcli", "llama-cpp-python", "llama.cpp", "cpu features", "gpu offload", "threads",
                  "config file", "data folder", "hub cache", "default model", "model loads"):
        assert label in out, label
    assert os.environ["GPTCLI_HOME"] in out  # the data folder the tests isolate
    assert str(Path(os.environ["HF_HOME"]) / "hub") in out
    assert "smollm2-135m (embedded)" in out
    assert "yes, and generates" in out
    assert proc.stderr == ""


@pytest.mark.model
def test_doctor_json_names_versions_and_features(run_gptcli):
    from importlib.metadata import version

    proc = run_gptcli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1
    data = json.loads(proc.stdout)
    assert data["ok"] is True
    checks = {c["label"]: c for c in data["checks"]}
    assert checks["llama-cpp-python"]["value"] == version("llama_cpp_python")
    assert checks["cpu features"]["value"] != "none reported"
    assert checks["model loads"]["status"] == "ok"
    assert all(c["status"] != "fail" for c in data["checks"])


def test_a_broken_config_file_fails_and_says_where(run_gptcli, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("temperature = 'hot'\n")
    proc = run_gptcli("doctor", "--no-load", "--json", env={"GPTCLI_CONFIG": str(config)})
    assert proc.returncode == 1
    checks = _checks(proc.stdout)
    assert checks["config file"]["status"] == "fail"
    assert "line 1" in checks["config file"]["detail"]
    assert proc.stderr.startswith("error: config file ") and "temperature" in proc.stderr


def test_gpu_layers_on_a_cpu_only_build_is_reported(run_gptcli):
    from gptcli.engines.devices import backend

    proc = run_gptcli("doctor", "--no-load", env={"GPTCLI_GPU_LAYERS": "all"})
    if backend().gpus:  # a CUDA/Metal build with a device: offload works
        assert proc.returncode == 0, proc.stdout
        assert "gpu_layers = all, on " in proc.stdout
    else:
        assert proc.returncode == 1
        assert "gpu_layers = all but this llama.cpp build is CPU-only" in proc.stdout
        assert "CMAKE_ARGS" in proc.stdout
        assert proc.stderr.startswith("error: gpu offload: ")


def test_without_gpu_layers_a_cpu_build_is_fine(run_gptcli):
    proc = run_gptcli("doctor", "--no-load", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _checks(proc.stdout)["gpu offload"]["status"] in ("info", "ok")


def test_a_default_model_that_is_not_a_gguf_fails(run_gptcli, tmp_path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not a model" * 50)
    proc = run_gptcli("doctor", "--json", env={"GPTCLI_MODEL": str(junk)})
    assert proc.returncode == 1
    check = _checks(proc.stdout)["default model"]
    assert check["status"] == "fail" and "GGUF magic" in check["detail"]
    assert "error: default model: " in proc.stderr


def test_a_default_model_llama_cpp_cannot_load_fails(run_gptcli, tmp_path):
    """A file whose header is a valid GGUF but whose tensors are not a llama model: only loading finds out."""
    hollow = tiny_gguf(tmp_path / "hollow-Q4_K_M.gguf")
    proc = run_gptcli("doctor", "--json", env={"GPTCLI_MODEL": str(hollow)})
    assert proc.returncode == 1, proc.stdout
    checks = _checks(proc.stdout)
    assert checks["default model"]["status"] == "ok"
    assert checks["model loads"]["status"] == "fail"
    assert "cannot load model" in checks["model loads"]["detail"]
    assert proc.stderr.startswith("error: model loads: cannot load model")


def test_a_registered_model_whose_file_is_gone_is_a_warning(cli, tmp_path):
    model = tiny_gguf(tmp_path / "gone-Q8_0.gguf", quant="Q8_0")
    assert cli(["models", "add", str(model), "--alias", "gone"]).exit_code == 0
    model.unlink()
    result = cli(["doctor", "--no-load"])
    assert result.exit_code == 0, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if "models" in line and "models.json" in line)
    assert line.startswith("!!")
    assert "files missing: gone:" in result.stdout


def test_the_token_is_never_printed(run_gptcli):
    secret = "hf_doctorSECRET0123456789"
    proc = run_gptcli("doctor", "--no-load", env={"HF_TOKEN": secret})
    assert proc.returncode == 0
    assert secret not in proc.stdout + proc.stderr
    assert "HF_TOKEN set (hidden)" in proc.stdout


def test_doctor_help_has_an_example(run_gptcli):
    proc = run_gptcli("doctor", "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0 and "Example: gptcli doctor" in proc.stdout


def test_a_remote_engine_is_reported_without_loading_or_contacting_it(run_gptcli):
    proc = run_gptcli("doctor", "--json", env={"GPTCLI_ENGINE": "remote", "GPTCLI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = _checks(proc.stdout)
    assert checks["engine"]["value"].startswith("remote (http://127.0.0.1:9/v1)")
    assert "model loads" not in checks


def test_an_unknown_engine_fails(run_gptcli):
    proc = run_gptcli("doctor", "--no-load", env={"GPTCLI_ENGINE": "bogus"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: engine: unknown engine 'bogus'")


def test_a_gpu_build_names_its_backend_device_and_memory():
    """As llama.cpp's backend registry reports a CUDA build on an H200 (``ggml_backend_dev_*``)."""
    from gptcli.doctor import device_checks
    from gptcli.engines.devices import Backend, Device

    gib = 1 << 30
    cuda = Backend(
        llama_cpp_python="0.3.36",
        llama_cpp="0.5.0-dev",
        system_info="CUDA : ARCHS = 900 | CPU : SSE3 = 1 | AVX2 = 1 |",
        cpu_features=["SSE3", "AVX2"],
        backends=["CUDA", "CPU"],
        devices=[
            Device("CUDA0", "NVIDIA H200", "gpu", "CUDA", 138 * gib, 140 * gib),
            Device("CPU", "AMD EPYC 9654", "cpu", "CPU", 120 * gib, 128 * gib),
        ],
        gpu_offload=True,
    )
    checks = {c.label: c for c in device_checks(cuda, -1)}
    assert checks["llama.cpp"].value == "0.5.0-dev (backends: CUDA, CPU)"
    assert checks["gpu"].value == "CUDA CUDA0: NVIDIA H200 (140.0 GiB, 138.0 GiB free)"
    assert checks["gpu offload"].status == "ok" and checks["gpu offload"].value == "gpu_layers = all, on CUDA CUDA0"
    idle = {c.label: c for c in device_checks(cuda, 0)}
    assert "available on CUDA CUDA0" in idle["gpu offload"].value and idle["gpu offload"].status == "info"
    cpu_only = Backend("0.3.36", "0.5.0-dev", "", [], ["CPU"], [Device("CPU", "AMD EPYC", "cpu", "CPU", gib, gib)], False)
    checks = {c.label: c for c in device_checks(cpu_only, 0)}
    assert "gpu" not in checks and checks["gpu offload"].value == "not supported by this build (CPU only)"
    assert {c.label: c for c in device_checks(cpu_only, 10)}["gpu offload"].status == "fail"


@pytest.mark.parametrize("offline", ["0", "1"])
def test_doctor_never_claims_the_hub_is_online(run_gptcli, offline):
    """doctor makes no request, so its hub line says what is set, not whether the Hub answers."""
    proc = run_gptcli("doctor", "--no-load", "--json", env={"HF_HUB_OFFLINE": offline, "HF_ENDPOINT": "http://127.0.0.1:9"})
    hub = _checks(proc.stdout)["hub"]
    text = json.dumps(hub)
    assert "online" not in text
    assert ("offline mode on" if offline == "1" else "offline mode off (network not checked)") in text
