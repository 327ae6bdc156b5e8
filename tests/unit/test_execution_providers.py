"""MAAS_EXECUTION_PROVIDERS: names → ORT providers, and a clear load failure when the build lacks one."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from functions.errors import ArtifactError
from functions.inference.registry import ModelRegistry
from functions.inference.session import resolve_providers
from functions.settings import Settings


def test_cpu_is_the_default_and_cpu_is_always_the_last_fallback():
    assert resolve_providers("") == ["CPUExecutionProvider"]
    assert resolve_providers(Settings().execution_providers) == ["CPUExecutionProvider"]


def test_unknown_names_are_refused_with_the_valid_ones_listed():
    with pytest.raises(ArtifactError, match=r"unknown provider.*rocm.*use any of cpu, cuda, tensorrt"):
        resolve_providers("rocm,cpu")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_asking_for_cuda_on_a_cpu_build_is_a_load_failure_that_says_what_to_install(built_artifacts, tmp_path):
    registry = ModelRegistry()
    settings = Settings(execution_providers="cuda,cpu", cache_dir=tmp_path)
    assert registry.load(str(built_artifacts["minilm-embed"]), settings) is None
    assert not registry.ready and registry.failure_summary() == [{"code": "artifact_invalid"}]
    (message,) = registry.failures.values()
    assert "CUDAExecutionProvider" in message and "install onnxruntime-gpu" in message


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_cuda_comes_first_with_cpu_as_fallback():
    assert resolve_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_decoders_spin_between_runs_and_encoders_only_within_one(registry):
    from functions.inference.pipelines.generation import GenerationPipeline
    from functions.inference.session import create_session

    encoder = registry.get("minilm-embed").session.get_session_options()
    assert encoder.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert encoder.get_session_config_entry("session.force_spinning_stop") == "1"  # parked as each run returns
    spinning = create_session(
        registry.get("minilm-embed").directory / "model.onnx", spinning=GenerationPipeline.spin_threads
    ).get_session_options()
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    with pytest.raises(Exception, match="force_spinning_stop"):  # never set: spinning carries over between runs
        spinning.get_session_config_entry("session.force_spinning_stop")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has CUDA")
def test_a_gpu_server_whose_session_fell_back_to_the_cpu_is_not_ready_and_says_why(
    built_artifacts, tmp_path, monkeypatch
):
    """GIVEN onnxruntime-gpu that lists CUDA but cannot create it (no driver or libraries: simulated with this CPU
    build, on which ORT creates the session on the CPU with a warning, exactly as onnxruntime-gpu does) WHEN the
    GPU server loads its model THEN readiness says 503 with the reason, instead of serving on the CPU."""
    from fastapi.testclient import TestClient

    from functions.web.app import create_app

    listed = [*ort.get_available_providers(), "CUDAExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    registry = ModelRegistry()
    settings = Settings(execution_providers="cuda,cpu", cache_dir=tmp_path)
    assert registry.load(str(built_artifacts["minilm-embed"]), settings) is None
    (message,) = registry.failures.values()
    assert "CUDAExecutionProvider was requested but the session runs on CPUExecutionProvider only" in message
    with TestClient(create_app(registry, settings)) as client:
        ready = client.get("/v2/health/ready")
        assert ready.status_code == 503
        assert ready.json()["failures"] == [{"code": "execution_provider_inactive"}]
        embed = client.post("/models/minilm-embed/predict", json={"inputs": "x"})
        assert embed.status_code == 503  # and no request is ever served on the fallback
