"""GIVEN a model WHEN its package is staged THEN the zip holds functions/ + the artifact (+ the pre-built
dependency sets its task needs, with their bytecode, built from the current functions/requirements.lock),
the Docker context holds exactly what the Dockerfile copies (the model's part of the lock), and the
Dockerfiles carry the runtime contract (handlers, uvicorn on 8080, onnxruntime-gpu, health path,
non-root user). The dependency directories here are laid out as infra.build_deps leaves them (dist-info,
bytecode, build record) without pip: tests/infra/test_lambda_deps.py builds real ones."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from functions.contract import aws_limits
from functions.contract.catalog import parse_catalog
from infra import build_deps, limits, lockfile, packaging
from infra.config import load_models
from infra.packaging import (
    GPU_DOCKERFILE,
    LAMBDA_DOCKERFILE,
    LOCK,
    REQUIREMENTS,
    PackagingError,
    deps_dir,
    deps_stamp,
    expected_pins,
    requirement_lines,
    runtime_bytes_by_arch,
    stage_docker_context,
    stage_lambda_zip,
)
from infra.settings import load_environment
from tests.infra.conftest import MB, gpu_entry, lambda_entry, write_manifest


def write_built_deps(
    lambda_deps_dir: Path, arch: str = "arm64", extra: str | None = None, *, pins: dict[str, str] | None = None
) -> Path:
    """A dependency directory as infra.build_deps leaves it: one dist-info per pin, a module with its
    Lambda-Python bytecode, and the build record; ``pins`` (default: the lock's) are what it holds."""
    target = deps_dir(lambda_deps_dir, arch, extra)
    held = expected_pins(arch, extra) if pins is None else pins
    for name, version in held.items():
        info = target / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    module = target / ("PIL" if extra == "image" else "numpy")
    (module / "__pycache__").mkdir(parents=True)
    (module / "__init__.py").write_text("")
    tag = limits.LAMBDA_PYTHON_VERSION.replace(".", "")
    (module / "__pycache__" / f"__init__.cpython-{tag}.pyc").write_bytes(b"")
    locked = lockfile.read_lock(LOCK)
    record = [replace(locked[name], version=version) for name, version in held.items()]
    environment = lockfile.lambda_environment(arch, limits.LAMBDA_PYTHON_VERSION)
    deps_stamp(lambda_deps_dir, arch, extra).write_text(lockfile.render(record, environment))
    return target


def _setup(tmp_path: Path, mode: str = "preview", deps: bool = False, task: str = "sentence-embeddings"):  # type: ignore[no-untyped-def]
    artifacts = tmp_path / "artifacts"
    write_manifest(artifacts, "m", task, {"model.onnx": 4, "tokenizer.json": 2})
    (artifacts / "m" / "model.onnx").write_bytes(b"onnx")
    (artifacts / "m" / "tokenizer.json").write_bytes(b"{}")
    lambda_deps = tmp_path / "deps"
    if deps:
        for extra in (None, *packaging.EXTRAS):
            write_built_deps(lambda_deps, "arm64", extra)
    context = {
        "account": "123456789012",
        "region": "eu-west-1",
        "packaging": mode,
        "artifactsDir": str(artifacts),
        "stagingDir": str(tmp_path / "staging"),
        "lambdaDepsDir": str(lambda_deps),
    }
    settings = load_environment(context.get, {})
    (spec,) = load_models(
        parse_catalog({"m": lambda_entry(task)}),
        artifacts_dir=artifacts,
        allow_missing_artifacts=False,
        runtime_bytes=runtime_bytes_by_arch(settings),
        api_timeout_quota_s=29,
    )
    return settings, spec


def test_zip_holds_the_runtime_package_the_artifact_and_the_dependencies_with_bytecode(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True)
    out = stage_lambda_zip(spec, settings, architecture="arm64")
    assert (out / "functions" / "__init__.py").is_file()
    # the runtime ships its own bytecode, compiled by Lambda's Python (never the repo's 3.11 caches)
    caches = [p.name for p in (out / "functions").rglob("*.pyc")]
    assert caches and all(".cpython-313." in name for name in caches)
    assert (out / "functions" / "__pycache__" / "settings.cpython-313.pyc").is_file()
    assert sorted(p.name for p in (out / "artifacts" / "m").iterdir()) == [
        "manifest.json",
        "model.onnx",
        "tokenizer.json",
    ]
    assert (out / "numpy" / "__init__.py").is_file()
    assert list((out / "numpy" / "__pycache__").glob("*.pyc"))  # Lambda's task root is read-only
    assert not list(out.glob("*.requirements.txt"))  # the build records stay out of the zip


@pytest.mark.parametrize("task", ["sentence-embeddings", "image-classification"])
def test_zip_carries_the_image_extra_exactly_for_the_tasks_that_import_it(tmp_path: Path, task: str) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True, task=task)
    out = stage_lambda_zip(spec, settings, architecture="arm64")
    carries = task in packaging.IMAGE_EXTRA_TASKS
    assert (out / "PIL" / "__init__.py").is_file() == carries
    assert any(out.glob("pillow-*.dist-info")) == carries
    assert "image-classification" in packaging.IMAGE_EXTRA_TASKS  # image models always have pillow


def test_no_set_carries_the_hub_client_or_the_aws_sdk() -> None:
    for arch in packaging.ARCHITECTURES:
        for extra in (None, *packaging.EXTRAS):
            names = set(expected_pins(arch, extra))
            assert not names & {"huggingface-hub", "hf-xet", "fsspec", "tqdm", "boto3", "botocore"}
    assert set(expected_pins("arm64", "image")) == {"pillow"}
    base = set(expected_pins("arm64"))
    assert "pillow" not in base and {"onnxruntime", "tokenizers", "numpy"} <= base


def test_strict_zip_refuses_dependencies_built_from_another_lock(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict")
    write_built_deps(settings.lambda_deps_dir, "arm64", pins={**expected_pins("arm64"), "numpy": "1.26.4"})
    with pytest.raises(PackagingError, match=r"another lock .*numpy 1\.26\.4 -> 2\..*infra.build_deps --arch arm64"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_strict_zip_refuses_dependencies_changed_since_their_build(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True)
    (settings.lambda_deps_dir / "arm64" / "huggingface_hub-2.4.0.dist-info").mkdir()  # a later `pip install`
    (settings.lambda_deps_dir / "arm64" / "huggingface_hub-2.4.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: huggingface-hub\nVersion: 2.4.0\n"
    )
    with pytest.raises(PackagingError, match=r"no longer holds what it was built with \(huggingface-hub 2.4.0 -> -\)"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_strict_zip_refuses_dependencies_without_lambda_python_bytecode(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True)
    (settings.lambda_deps_dir / "arm64" / "numpy" / "linalg.py").write_text("")
    with pytest.raises(PackagingError, match=rf"lacks Python {limits.LAMBDA_PYTHON_VERSION} bytecode .*numpy/linalg"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_strict_zip_refuses_dependencies_without_a_build_record(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True)
    deps_stamp(settings.lambda_deps_dir, "arm64").unlink()
    with pytest.raises(PackagingError, match=r"no record of the pins.*--arch arm64"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_strict_zip_refuses_a_missing_extra(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True, task="image-classification")
    shutil.rmtree(deps_dir(settings.lambda_deps_dir, "arm64", "image"))
    with pytest.raises(PackagingError, match=r"no runtime dependencies for arm64 in .*arm64-image.*--arch arm64"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def test_a_preview_zip_refuses_every_call_with_a_message_that_says_how_to_deploy(tmp_path: Path) -> None:
    """GIVEN a preview synth (no dependencies, maybe no model) WHEN its zip is invoked as Lambda would THEN HTTP
    events get a 503 that says how to deploy for real, and S3/SQS events raise (retried, then dead-lettered)."""
    settings, spec = _setup(tmp_path, mode="preview", deps=True)
    out = stage_lambda_zip(spec, settings, architecture="arm64")
    assert not (out / "numpy").exists() and not (out / "artifacts").exists()  # no runtime, no model
    probe = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from functions.handlers import http, s3, sqs\n"
        "answer = http.handler({'httpMethod': 'POST', 'path': '/models/m/predict'}, None)\n"
        "raised = []\n"
        "for module in (s3, sqs):\n"
        "    try:\n"
        "        module.handler({'Records': [{}]}, None)\n"
        "    except RuntimeError as exc:\n"
        "        raised.append(str(exc))\n"
        "print(json.dumps({'answer': answer, 'raised': raised}))\n"
    )
    run = subprocess.run([sys.executable, "-I", "-c", probe, str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["answer"]["statusCode"] == 503
    message = json.loads(result["answer"]["body"])["error"]["message"]
    assert "packaging=preview" in message and "infra.build_deps" in message and "strict packaging" in message
    assert result["raised"] == [message, message]


def test_requirement_comparison_ignores_comments_and_spacing() -> None:
    assert requirement_lines("# header\nnumpy >= 1.26 # why\n\npillow>=10\n") == ["numpy>=1.26", "pillow>=10"]


def test_pip_is_given_every_manylinux_tag_lambda_runs() -> None:
    # pip takes a wheel only for a --platform it was given: numpy ships manylinux_2_27/2_28 wheels.
    for arch, machine in (("arm64", "aarch64"), ("x86_64", "x86_64")):
        tags = build_deps.platform_tags(arch)
        assert tags[0] == f"manylinux_2_34_{machine}"  # Amazon Linux 2023: glibc 2.34
        assert {f"manylinux_2_28_{machine}", f"manylinux_2_17_{machine}", f"manylinux2014_{machine}"} <= set(tags)
        assert not any(t.startswith(("manylinux_2_35", "linux_", "musllinux")) for t in tags)
        command = build_deps.pip_command(arch, Path("/t"), Path("/r"))
        assert [command[i + 1] for i, arg in enumerate(command) if arg == "--platform"] == tags
        assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(command)
        assert command[command.index("--python-version") + 1] == limits.LAMBDA_PYTHON_VERSION


def test_strict_zip_refuses_a_manifest_listing_missing_files(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path, mode="strict", deps=True)
    (spec.artifact.directory / "model.onnx").unlink()
    with pytest.raises(PackagingError, match=r"lists model.onnx but .* does not exist"):
        stage_lambda_zip(spec, settings, architecture="arm64")


def _gpu_spec(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings, _ = _setup(tmp_path)
    write_manifest(tmp_path / "artifacts", "g", "sentence-embeddings", {"model.onnx": 4})
    (spec,) = load_models(
        parse_catalog({"g": gpu_entry()}),
        artifacts_dir=tmp_path / "artifacts",
        allow_missing_artifacts=False,
        runtime_bytes=runtime_bytes_by_arch(settings),
        api_timeout_quota_s=29,
    )
    return settings, spec


def _copied(dockerfile: Path) -> set[str]:
    """The build-context paths a Dockerfile's COPY instructions read (not those from another stage)."""
    sources = set()
    for line in _instructions(dockerfile):
        if line.startswith("COPY ") and "--from=" not in line:
            sources |= {source.rstrip("/") for source in line.split()[1:-1]}
    return sources


def test_s3_sourced_models_leave_the_artifact_out_of_the_package(tmp_path: Path) -> None:
    settings, spec = _setup(tmp_path)
    entry = spec.entry.model_copy(update={"deploy": spec.deploy.model_copy(update={"model_source": "s3"})})
    spec = replace(spec, entry=entry)
    out = stage_docker_context(spec, settings, dockerfile=LAMBDA_DOCKERFILE)
    assert (out / "Dockerfile").read_text() == LAMBDA_DOCKERFILE.read_text()
    assert (out / "functions").is_dir()
    assert list((out / "artifacts" / "m").iterdir()) == []


@pytest.mark.parametrize("mode", ["preview", "strict"])
def test_lambda_image_context_installs_the_models_part_of_the_lock(tmp_path: Path, mode: str, monkeypatch: Any) -> None:
    settings, spec = _setup(tmp_path, mode=mode)
    out = stage_docker_context(spec, settings, dockerfile=LAMBDA_DOCKERFILE)
    assert {p.name for p in out.iterdir()} == _copied(LAMBDA_DOCKERFILE) | {"Dockerfile"}
    staged, locked = lockfile.read_lock(out / "requirements.lock"), lockfile.read_lock(LOCK)
    sets = packaging.dependency_sets(locked)
    wanted = {name for extra in (None, *packaging.extras_for(spec.task)) for name in sets[extra]}
    assert set(staged) == wanted
    assert all(pin.hashes == locked[name].hashes and pin.marker == locked[name].marker for name, pin in staged.items())
    # The lock is source, never a build output: missing is an error in preview too.
    monkeypatch.setattr(packaging, "LOCK", tmp_path / "gone.lock")
    with pytest.raises(PackagingError, match=r"gone.lock is missing \(`make lock`\); the image cannot be built"):
        stage_docker_context(spec, settings, dockerfile=LAMBDA_DOCKERFILE)


def test_gpu_context_leaves_onnxruntime_to_the_cuda_build_and_constrains_the_rest(tmp_path: Path) -> None:
    settings, spec = _gpu_spec(tmp_path)
    out = stage_docker_context(spec, settings, dockerfile=GPU_DOCKERFILE)
    assert {p.name for p in out.iterdir()} == _copied(GPU_DOCKERFILE) | {"Dockerfile"}
    staged, locked = lockfile.read_lock(out / "requirements.lock"), lockfile.read_lock(LOCK)
    # onnxruntime-gpu brings its own dependencies (flatbuffers, protobuf, ...), held by the constraints.
    assert "onnxruntime" not in staged and "flatbuffers" not in staged
    assert {"numpy", "tokenizers", "fastapi"} <= set(staged) and not {"huggingface-hub", "hf-xet"} & set(staged)
    assert (out / "constraints.txt").read_text() == lockfile.constraints(locked.values())
    assert "--hash" not in (out / "constraints.txt").read_text()


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


def _stages(dockerfile: Path) -> dict[str, list[str]]:
    """The instructions of each named build stage (``FROM … AS <name>``)."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in _instructions(dockerfile):
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1] if " AS " in line else line, [])
        current.append(line)
    return stages


def test_lambda_dockerfile_builds_on_the_lambda_python_base_image() -> None:
    lines = _instructions(LAMBDA_DOCKERFILE)
    runtime = _stages(LAMBDA_DOCKERFILE)["runtime"]
    assert f"ARG PYTHON_VERSION={limits.LAMBDA_PYTHON_VERSION}" in lines
    assert runtime[0] == "FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS runtime"
    assert any(line.startswith("RUN pip install") and "--only-binary=:all:" in line for line in runtime)
    assert "COPY functions/ ${LAMBDA_TASK_ROOT}/functions/" in runtime
    assert "COPY artifacts/ ${LAMBDA_TASK_ROOT}/artifacts/" in runtime
    assert runtime[-1] == 'CMD ["functions.handlers.http.handler"]'
    assert "torch" not in LAMBDA_DOCKERFILE.read_text().lower().replace("no torch", "")


def test_lambda_dockerfile_installs_the_staged_lock_hash_checked() -> None:
    runtime = _stages(LAMBDA_DOCKERFILE)["runtime"]
    assert "COPY requirements.lock /tmp/requirements.lock" in runtime
    (run,) = [line for line in runtime if line.startswith("RUN pip install")]
    assert "--require-hashes --no-deps" in run and "-r /tmp/requirements.lock" in run


def test_lambda_dockerfile_stream_target_puts_the_web_adapter_before_the_same_app() -> None:
    """The streaming variant: the runtime stage plus uvicorn (held to the lock) and the Lambda Web Adapter, its entry
    point the contract's server command (infra sets the same one on the function)."""
    from functions.contract.deployment import STREAM_SERVER_COMMAND

    stages = _stages(LAMBDA_DOCKERFILE)
    stream = stages["stream"]
    assert stream[0] == "FROM runtime AS stream"
    (run,) = [line for line in stream if line.startswith("RUN pip install")]
    assert "-c /tmp/constraints.txt" in run and '"uvicorn==${UVICORN_VERSION}"' in run
    assert "COPY --from=lambda-adapter /lambda-adapter /opt/extensions/lambda-adapter" in stream
    assert stages["lambda-adapter"][0].startswith("FROM public.ecr.aws/awsguru/aws-lambda-adapter:")
    entrypoint = next(line for line in stream if line.startswith("ENTRYPOINT "))
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == list(STREAM_SERVER_COMMAND)


def test_gpu_dockerfile_installs_the_lock_then_the_cuda_build_under_its_constraints() -> None:
    lines = _instructions(GPU_DOCKERFILE)
    assert "COPY requirements.lock constraints.txt /tmp/" in lines
    (run,) = [line for line in lines if line.startswith("RUN pip install")]
    first, second = run.split(" && ")[:2]
    assert "--require-hashes --no-deps -r /tmp/requirements.lock" in first
    assert second.startswith("pip install") and "-c /tmp/constraints.txt" in second
    assert '"onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}"' in second


def test_gpu_dockerfile_serves_uvicorn_with_onnxruntime_gpu_as_non_root() -> None:
    text = GPU_DOCKERFILE.read_text()
    lines = _instructions(GPU_DOCKERFILE)
    assert "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" in text
    assert "/v2/health/ready" in text and "EXPOSE 8080" in lines
    assert any(line.startswith("USER ") and not line.endswith(("root", " 0")) for line in lines)
    assert lines[-1].startswith('CMD ["uvicorn", "functions.handlers.http:app", "--host", "0.0.0.0", "--port", "8080"')
    assert "COPY artifacts/ /app/artifacts/" in lines  # MAAS_MODELS=/app/artifacts/<name> in the task definition
