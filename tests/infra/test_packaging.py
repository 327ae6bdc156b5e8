"""GIVEN a model WHEN its package is staged THEN the zip holds functions/ + the artifact (+ the pre-built
dependencies, built from the current functions/requirements.txt), the Docker context holds exactly what
the Dockerfile copies (requirements.txt = functions/requirements.txt), and the Dockerfiles carry the
runtime contract (handlers, uvicorn on 8080, onnxruntime-gpu, health path, non-root user)."""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from functions.contract import aws_limits, parse_catalog
from infra import build_deps, limits, packaging
from infra.config import load_models
from infra.packaging import (
    GPU_DOCKERFILE,
    LAMBDA_DOCKERFILE,
    REQUIREMENTS,
    PackagingError,
    deps_stamp,
    requirement_lines,
    runtime_bytes_by_arch,
    stage_docker_context,
    stage_lambda_zip,
)
from infra.settings import load_environment
from tests.infra.conftest import MB, lambda_entry, write_manifest


def _setup(tmp_path: Path, packaging: str = "preview", deps: bool = False, stamp: str | None = None):  # type: ignore[no-untyped-def]
    artifacts = tmp_path / "artifacts"
    write_manifest(artifacts, "m", "sentence-embeddings", {"model.onnx": 4, "tokenizer.json": 2})
    (artifacts / "m" / "model.onnx").write_bytes(b"onnx")
    (artifacts / "m" / "tokenizer.json").write_bytes(b"{}")
    deps_dir = tmp_path / "deps"
    if deps:
        (deps_dir / "arm64" / "numpy").mkdir(parents=True)
        (deps_dir / "arm64" / "numpy" / "__init__.py").write_text("")
        # What infra.build_deps records: the requirements it installed (current ones unless told).
        text = REQUIREMENTS.read_text() if stamp is None else stamp
        deps_stamp(deps_dir, "arm64").write_text(text)
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
        parse_catalog({"m": lambda_entry()}),
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
    assert not (out / "arm64.requirements.txt").exists()  # the build record stays out of the zip


def test_strict_zip_refuses_dependencies_built_from_other_requirements(tmp_path: Path) -> None:
    stale = "\n".join(line for line in REQUIREMENTS.read_text().splitlines() if not line.startswith("pillow"))
    settings, spec = _setup(tmp_path, packaging="strict", deps=True, stamp=stale)
    with pytest.raises(PackagingError, match=r"other requirements.*not in the build: pillow.*infra.build_deps"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_strict_zip_refuses_dependencies_without_a_build_record(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, packaging="strict", deps=True)
    deps_stamp(settings.lambda_deps_dir, "arm64").unlink()
    with pytest.raises(PackagingError, match=r"no record of the requirements.*--arch arm64"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_preview_zip_stages_whatever_dependencies_exist(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, packaging="preview", deps=True, stamp="numpy==1.0\n")
    assert (stage_lambda_zip(spec, settings, architecture="arm64") / "numpy").is_dir()


def test_requirement_comparison_ignores_comments_and_spacing() -> None:
    assert requirement_lines("# header\nnumpy >= 1.26 # why\n\npillow>=10\n") == ["numpy>=1.26", "pillow>=10"]


def test_build_deps_installs_the_requirements_and_records_them(tmp_path: Path, monkeypatch: Any) -> None:
    calls: list[list[str]] = []

    def fake_pip(command: list[str], check: bool) -> None:
        calls.append(command)
        target = Path(command[command.index("--target") + 1])
        (target / "boto3").mkdir(parents=True)  # provided by the Lambda runtime: removed again
        (target / "PIL").mkdir()

    monkeypatch.setattr(build_deps.subprocess, "run", fake_pip)
    target = build_deps.build("arm64", tmp_path)
    (command,) = calls
    assert command[command.index("--requirement") + 1] == str(REQUIREMENTS)
    assert command[command.index("--python-version") + 1] == limits.LAMBDA_PYTHON_VERSION
    assert "--only-binary=:all:" in command and build_deps.PLATFORMS["arm64"] in command
    assert sorted(p.name for p in target.iterdir()) == ["PIL"]
    assert deps_stamp(tmp_path, "arm64").read_text() == REQUIREMENTS.read_text()
    packaging.check_deps_current(target, deps_stamp(tmp_path, "arm64"))  # current: accepted


def test_strict_zip_refuses_a_manifest_listing_missing_files(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, packaging="strict", deps=True)
    (spec.artifact.directory / "model.onnx").unlink()
    with pytest.raises(PackagingError, match=r"lists model.onnx but .* does not exist"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_s3_sourced_models_leave_the_artifact_out_of_the_package(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path)
    entry = spec.entry.model_copy(update={"deploy": spec.deploy.model_copy(update={"model_source": "s3"})})
    spec = replace(spec, entry=entry)
    out = stage_docker_context(spec, settings, dockerfile=LAMBDA_DOCKERFILE)
    assert (out / "Dockerfile").read_text() == LAMBDA_DOCKERFILE.read_text()
    assert (out / "requirements.txt").read_text() == REQUIREMENTS.read_text()
    assert (out / "functions").is_dir()
    assert list((out / "artifacts" / "m").iterdir()) == []


@pytest.mark.parametrize("mode", ["preview", "strict"])
def test_docker_context_always_carries_the_runtime_requirements(tmp_path: Path, mode: str, monkeypatch: Any) -> None:
    settings, spec = _setup(tmp_path, packaging=mode)
    out = stage_docker_context(spec, settings, dockerfile=GPU_DOCKERFILE)
    assert (out / "requirements.txt").read_text() == REQUIREMENTS.read_text()
    # The requirements are source, never a build output: missing is an error in preview too.
    monkeypatch.setattr(packaging, "REQUIREMENTS", tmp_path / "gone.txt")
    with pytest.raises(PackagingError, match=r"gone.txt is missing; the image cannot be built"):
        stage_docker_context(spec, settings, dockerfile=GPU_DOCKERFILE)


def test_runtime_requirements_cover_every_task_and_stay_torch_free() -> None:
    names = {
        re.split(r"[<>=~!;\[ ]", line, maxsplit=1)[0].lower() for line in requirement_lines(REQUIREMENTS.read_text())
    }
    # onnxruntime + tokenizers (text), pillow (image-classification), the API and the batch runtime.
    assert {"onnxruntime", "tokenizers", "numpy", "pillow", "fastapi", "mangum", "aws-lambda-powertools"} <= names
    assert "pydantic-settings" in names  # functions.settings.py
    assert not names & {"torch", "transformers", "boto3"}  # boto3: Lambda's; the GPU image adds its own


def test_runtime_estimate_is_used_until_dependencies_are_built(tmp_path: Path) -> None:
    settings, _ = _setup(tmp_path)
    sizes = runtime_bytes_by_arch(settings)
    assert sizes["arm64"] >= limits.RUNTIME_DEPS_ESTIMATE_BYTES
    assert limits.RUNTIME_DEPS_ESTIMATE_BYTES + 23 * MB < aws_limits.LAMBDA_ZIP_UNZIPPED_MAX_BYTES  # MiniLM fits a zip


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


def test_lambda_dockerfile_installs_the_staged_requirements() -> None:
    lines = _instructions(LAMBDA_DOCKERFILE)
    assert "COPY requirements.txt /tmp/requirements.txt" in lines
    assert any(line.startswith("RUN pip install") and "-r /tmp/requirements.txt" in line for line in lines)


def test_gpu_dockerfile_swaps_only_onnxruntime_for_the_cuda_build(tmp_path: Path) -> None:
    lines = _instructions(GPU_DOCKERFILE)
    assert "COPY requirements.txt /tmp/requirements.txt" in lines
    (run,) = [line for line in lines if "requirements-gpu.txt" in line and line.startswith("RUN grep")]
    tokens = shlex.split(run)  # RUN grep -viE '<pattern>' /tmp/requirements.txt > /tmp/requirements-gpu.txt ...
    grep = tokens[tokens.index("grep") : tokens.index("grep") + 5]
    assert grep[:2] == ["grep", "-viE"] and grep[3:] == ["/tmp/requirements.txt", ">"]
    assert "-r /tmp/requirements-gpu.txt" in run
    result = subprocess.run([*grep[:3], str(REQUIREMENTS)], capture_output=True, text=True, check=True)
    kept = requirement_lines(result.stdout)
    expected = [line for line in requirement_lines(REQUIREMENTS.read_text()) if not line.startswith("onnxruntime")]
    assert kept == expected and any(line.startswith("pillow") for line in kept)


def test_gpu_dockerfile_serves_uvicorn_with_onnxruntime_gpu_as_non_root() -> None:
    text = GPU_DOCKERFILE.read_text()
    lines = _instructions(GPU_DOCKERFILE)
    assert "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" in text
    assert "/v2/health/ready" in text and "EXPOSE 8080" in lines
    assert any(line.startswith("USER ") and not line.endswith(("root", " 0")) for line in lines)
    assert lines[-1].startswith('CMD ["uvicorn", "functions.handlers.http:app", "--host", "0.0.0.0", "--port", "8080"')
    assert "COPY artifacts/ /app/artifacts/" in lines  # MAAS_MODELS=/app/artifacts/<name> in the task definition
