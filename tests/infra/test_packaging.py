"""GIVEN a model WHEN its package is staged THEN the zip holds functions/ + the artifact (+ the pre-built
dependencies), the Docker context holds exactly what the Dockerfile copies, and the Dockerfiles carry the
runtime contract (handlers, uvicorn on 8080, onnxruntime-gpu, health path, non-root user)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from infra import limits
from infra.config import load_models
from infra.packaging import (
    GPU_DOCKERFILE,
    LAMBDA_DOCKERFILE,
    PackagingError,
    runtime_bytes_by_arch,
    stage_docker_context,
    stage_lambda_zip,
)
from infra.settings import load_environment
from tests.infra.conftest import MB, lambda_entry, write_manifest


def _setup(tmp_path: Path, packaging: str = "preview", deps: bool = False):  # type: ignore[no-untyped-def]
    artifacts = tmp_path / "artifacts"
    write_manifest(artifacts, "m", "sentence-embeddings", {"model.onnx": 4, "tokenizer.json": 2})
    (artifacts / "m" / "model.onnx").write_bytes(b"onnx")
    (artifacts / "m" / "tokenizer.json").write_bytes(b"{}")
    deps_dir = tmp_path / "deps"
    if deps:
        (deps_dir / "arm64" / "numpy").mkdir(parents=True)
        (deps_dir / "arm64" / "numpy" / "__init__.py").write_text("")
    context = {
        "account": "123456789012",
        "region": "eu-west-1",
        "packaging": packaging,
        "artifactsDir": str(artifacts),
        "stagingDir": str(tmp_path / "staging"),
        "lambdaDepsDir": str(deps_dir),
    }
    settings = load_environment(context.get, {})
    (spec,) = load_models(
        {"m": lambda_entry()},
        artifacts_dir=artifacts,
        allow_missing_artifacts=False,
        runtime_bytes=runtime_bytes_by_arch(settings),
        api_timeout_quota_s=29,
    )
    return settings, spec


def test_zip_holds_the_runtime_package_the_artifact_and_the_dependencies(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, packaging="strict", deps=True)
    out = stage_lambda_zip(spec, settings, architecture="arm64")
    assert (out / "functions" / "__init__.py").is_file()
    assert not list(out.rglob("__pycache__"))
    assert sorted(p.name for p in (out / "artifacts" / "m").iterdir()) == [
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
    ]
    assert (out / "numpy" / "__init__.py").is_file()


def test_strict_zip_refuses_a_manifest_listing_missing_files(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, packaging="strict", deps=True)
    (spec.artifact.directory / "model.onnx").unlink()
    with pytest.raises(PackagingError, match=r"lists model.onnx but .* does not exist"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_s3_sourced_models_leave_the_artifact_out_of_the_package(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path)
    spec = replace(spec, deploy=replace(spec.deploy, model_source="s3"))  # type: ignore[type-var]
    out = stage_docker_context(spec, settings, dockerfile=LAMBDA_DOCKERFILE)
    assert (out / "Dockerfile").read_text() == LAMBDA_DOCKERFILE.read_text()
    assert (out / "requirements.txt").is_file() and (out / "functions").is_dir()
    assert list((out / "artifacts" / "m").iterdir()) == []


def test_runtime_estimate_is_used_until_dependencies_are_built(tmp_path: Path) -> None:
    settings, _ = _setup(tmp_path)
    sizes = runtime_bytes_by_arch(settings)
    assert sizes["arm64"] >= limits.RUNTIME_DEPS_ESTIMATE_BYTES
    assert limits.RUNTIME_DEPS_ESTIMATE_BYTES + 23 * MB < limits.LAMBDA_ZIP_UNZIPPED_MAX_BYTES  # MiniLM fits a zip


def _instructions(dockerfile: Path) -> list[str]:
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_lambda_dockerfile_builds_on_the_lambda_python_base_image() -> None:
    lines = _instructions(LAMBDA_DOCKERFILE)
    assert f"ARG PYTHON_VERSION={limits.LAMBDA_PYTHON_VERSION}" in lines
    assert "FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}" in lines
    assert any(line.startswith("RUN pip install") and "--only-binary=:all:" in line for line in lines)
    assert "COPY functions/ ${LAMBDA_TASK_ROOT}/functions/" in lines
    assert "COPY artifacts/ ${LAMBDA_TASK_ROOT}/artifacts/" in lines
    assert lines[-1] == 'CMD ["functions.handlers.http.handler"]'
    assert "torch" not in LAMBDA_DOCKERFILE.read_text().lower().replace("no torch", "")


def test_gpu_dockerfile_serves_uvicorn_with_onnxruntime_gpu_as_non_root() -> None:
    text = GPU_DOCKERFILE.read_text()
    lines = _instructions(GPU_DOCKERFILE)
    assert "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" in text
    assert "/v2/health/ready" in text and "EXPOSE 8080" in lines
    assert any(line.startswith("USER ") and not line.endswith(("root", " 0")) for line in lines)
    assert lines[-1].startswith('CMD ["uvicorn", "functions.handlers.http:app", "--host", "0.0.0.0", "--port", "8080"')
    assert "COPY artifacts/ /app/artifacts/" in lines  # MAAS_MODELS=/app/artifacts/<name> in the task definition
