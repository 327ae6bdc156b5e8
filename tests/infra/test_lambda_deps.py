"""GIVEN `python -m infra.build_deps` run for real (pip from the package index, the only network use;
bytecode from Lambda's Python, CPython 3.13) for arm64 and x86_64 THEN each directory holds exactly its
set of functions/requirements.lock, for its CPU, with unchecked-hash 3.13 bytecode for every module; a
text model's zip staged from it (strict packaging) fits the size target; and on x86_64, the CPU these
machines run, that zip serves a request in CPython 3.13 with nothing but the zip on sys.path, from its
bytecode, importing neither the hub client nor (once functions/ allows it) pillow."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from functions.contract.catalog import load_catalog
from infra import build_deps, limits, lockfile, packaging
from infra.config import load_models
from infra.packaging import (
    EXTRAS,
    GPU_DOCKERFILE,
    LOCK,
    check_deps_current,
    deps_dir,
    deps_stamp,
    dir_size,
    expected_pins,
    installed_pins,
    missing_bytecode,
    stage_lambda_zip,
)
from infra.settings import load_environment
from tests.conftest import EVENTS_DIR
from tests.infra.conftest import MB, REPO

pytestmark = pytest.mark.slow

TEXT_ZIP_TARGET_BYTES = 200 * MB  # unzipped, bytecode included: leaves 50 MiB of Lambda's 250 for growth
ELF_MACHINES = {"arm64": 183, "x86_64": 62}  # e_machine: EM_AARCH64, EM_X86_64
PROBE = Path(__file__).with_name("lambda_probe.py")


@pytest.fixture(scope="session")
def stage_text_zip(
    tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path, built_artifacts: dict[str, Path]
) -> Callable[[str], Path]:
    """Stage minilm-embed's zip (strict packaging: checked against the lock) for an architecture."""
    tmp = tmp_path_factory.mktemp("text-zip")
    artifacts = tmp / "artifacts"
    shutil.copytree(built_artifacts["minilm-embed"], artifacts / "minilm-embed")  # never link the repo's
    context = {
        "account": "123456789012",
        "region": "eu-west-1",
        "packaging": "strict",
        "artifactsDir": str(artifacts),
        "stagingDir": str(tmp / "staging"),
        "lambdaDepsDir": str(lambda_deps),
    }
    settings = load_environment(context.get, {})
    entry = load_catalog(REPO / "catalog.toml")["minilm-embed"]
    (spec,) = load_models(
        {"minilm-embed": entry},
        artifacts_dir=artifacts,
        allow_missing_artifacts=False,
        runtime_bytes=packaging.runtime_bytes_by_arch(settings),
        api_timeout_quota_s=29,
    )
    return lambda arch: stage_lambda_zip(spec, settings, architecture=arch)


@pytest.mark.parametrize("arch", packaging.ARCHITECTURES)
def test_each_set_holds_exactly_its_locked_pins_and_its_build_record(lambda_deps: Path, arch: str) -> None:
    for extra in (None, *EXTRAS):
        deps = deps_dir(lambda_deps, arch, extra)
        assert installed_pins(deps) == expected_pins(arch, extra)
        check_deps_current(deps, deps_stamp(lambda_deps, arch, extra))  # what strict packaging runs
    base = {path.name for path in deps_dir(lambda_deps, arch).iterdir()}
    assert {"onnxruntime", "tokenizers", "numpy"} <= base
    assert not base & {"huggingface_hub", "hf_xet", "PIL", "boto3", "botocore", "bin"}
    assert {path.name for path in deps_dir(lambda_deps, arch, "image").iterdir()} >= {"PIL", "pillow.libs"}


@pytest.mark.parametrize("arch", packaging.ARCHITECTURES)
def test_native_code_is_built_for_the_function_cpu(lambda_deps: Path, arch: str) -> None:
    libraries = [p for extra in (None, *EXTRAS) for p in deps_dir(lambda_deps, arch, extra).rglob("*.so*")]
    assert len(libraries) > 20
    machines = {int.from_bytes(path.read_bytes()[18:20], "little") for path in libraries if path.is_file()}
    assert machines == {ELF_MACHINES[arch]}


@pytest.mark.parametrize("arch", packaging.ARCHITECTURES)
def test_every_module_has_unchecked_hash_bytecode_for_lambda_python(
    lambda_deps: Path, lambda_python: Path, arch: str
) -> None:
    probe = "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())"
    magic = bytes.fromhex(subprocess.run([lambda_python, "-c", probe], capture_output=True, text=True).stdout)
    for extra in (None, *EXTRAS):
        deps = deps_dir(lambda_deps, arch, extra)
        assert missing_bytecode(deps) == []
        headers = {path.read_bytes()[:8] for path in deps.rglob("*.pyc")}
        assert headers == {magic + (0b01).to_bytes(4, "little")}  # flags: hash-based, source never checked
        # What nothing imports at run time is gone (numpy's tests, onnxruntime's offline tools, stubs).
        assert not [path for pattern in build_deps.UNUSED_AT_RUN_TIME for path in deps.glob(pattern)]


@pytest.mark.parametrize("arch", packaging.ARCHITECTURES)
def test_text_zip_fits_the_size_target_with_bytecode(stage_text_zip: Callable[[str], Path], arch: str) -> None:
    out = stage_text_zip(arch)
    size = dir_size(out)
    assert size <= TEXT_ZIP_TARGET_BYTES, f"minilm-embed {arch} zip: {size / MB:.1f} MiB unzipped"
    assert any((out / "onnxruntime").rglob("*.cpython-313.pyc"))


def test_text_zip_serves_from_lambda_python_with_only_the_zip_on_sys_path(
    stage_text_zip: Callable[[str], Path], lambda_python: Path, tmp_path: Path
) -> None:
    task_root = stage_text_zip("x86_64")
    # Unzipping gives every file a new mtime: unchecked-hash bytecode must not care.
    for path in task_root.rglob("*"):
        if path.is_file() and path.parts[len(task_root.parts)] != "artifacts":
            os.utime(path)
    before = {path for path in task_root.rglob("*") if not path.is_relative_to(task_root / "functions")}
    result = tmp_path / "result.json"
    environment = {
        "PATH": "/usr/bin:/bin",
        "LAMBDA_TASK_ROOT": str(task_root),
        "MAAS_MODELS": str(task_root / "artifacts" / "minilm-embed"),
        "MAAS_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_METRICS_NAMESPACE": "maas-probe",
    }
    event = EVENTS_DIR / "apigw_v1_predict_embed.json"
    command = [str(path) for path in (lambda_python, "-I", "-S", "-v", PROBE, task_root, event, result)]
    run = subprocess.run(command, env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    served = json.loads(result.read_text())
    assert served["status"] == 200 and [len(v) for v in served["body"]["outputs"]] == [384, 384]
    modules = set(served["modules"])
    assert {"onnxruntime", "tokenizers", "numpy", "mangum"} <= modules
    assert not modules & {"huggingface_hub", "hf_xet", "boto3", "botocore"}
    # Pillow rides along only while functions/ imports it for every task (packaging.IMAGE_EXTRA_TASKS).
    carries_pillow = "sentence-embeddings" in packaging.IMAGE_EXTRA_TASKS
    assert ("PIL" in modules) == carries_pillow, (
        "a text model no longer imports PIL: narrow infra.packaging.IMAGE_EXTRA_TASKS to image tasks"
    )
    # Every dependency module came from its bytecode; only functions/ (not precompiled) from source.
    loaded = re.findall(r"^# code object from '?([^'\n]+)'?$", run.stderr, flags=re.MULTILINE)
    from_zip = [Path(path) for path in loaded if path.startswith(str(task_root))]
    assert len(from_zip) > 300
    compiled = [p for p in from_zip if p.suffix == ".py" and not p.is_relative_to(task_root / "functions")]
    assert compiled == []
    after = {path for path in task_root.rglob("*") if not path.is_relative_to(task_root / "functions")}
    assert after == before  # nothing written: the task root is read-only on Lambda


def test_gpu_image_packages_resolve_under_the_lock(tmp_path: Path) -> None:
    """The GPU image's second pip step (onnxruntime-gpu, uvicorn, boto3), resolved for its base image's
    Python against the lock's constraints: no conflict, and every package shared with the lock at its pin."""
    text = GPU_DOCKERFILE.read_text()
    python = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", text, flags=re.MULTILINE)
    ort = re.search(r"^ARG ONNXRUNTIME_GPU_VERSION=(\S+)", text, flags=re.MULTILINE)
    assert python and ort
    step = re.search(r"pip install --only-binary=:all: -c /tmp/constraints.txt \\\n(.*?) \\\n", text, flags=re.DOTALL)
    assert step
    packages = [p.replace("${ONNXRUNTIME_GPU_VERSION}", ort.group(1)) for p in shlex.split(step.group(1))]
    pins = lockfile.read_lock(LOCK)
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(lockfile.constraints(pins.values()))
    platforms = [arg for tag in build_deps.platform_tags("x86_64") for arg in ("--platform", tag)]
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--report", str(report),
        "--only-binary=:all:", "--implementation", "cp", "--python-version", python.group(1), *platforms,
        "--target", str(tmp_path / "target"), "-c", str(constraints), *packages,
    ]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    resolved: dict[str, str] = {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in installs
    }
    assert resolved["onnxruntime-gpu"] == ort.group(1) and "uvicorn" in resolved
    shared = {name for name in resolved if name in pins}
    assert {"numpy", "protobuf"} <= shared
    assert {name: resolved[name] for name in shared} == {name: pins[name].version for name in shared}


def test_build_deps_refuses_a_python_other_than_lambdas(tmp_path: Path) -> None:
    refused = rf"not CPython {limits.LAMBDA_PYTHON_VERSION}.*--lambda-python"
    with pytest.raises(packaging.PackagingError, match=refused):
        build_deps.build("x86_64", tmp_path, python=Path(sys.executable))  # the 3.11 test interpreter
    assert list(tmp_path.iterdir()) == []  # refused before anything was installed or deleted
