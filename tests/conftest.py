"""Shared fixtures: real built artifacts (built once per session if missing or stale), a loaded
registry, an in-process client and a live loopback server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "maas-tests")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

DEFAULT_MODELS = ("minilm-embed", "intent-classifier")
EVENTS_DIR = Path(__file__).resolve().parents[1] / "events"


def _fresh(artifact: Path, entry: object) -> bool:
    from functions.inference.loader import read_manifest

    if not (artifact / "manifest.json").is_file():
        return False
    manifest = read_manifest(artifact)
    return (
        manifest.quantization.preset == getattr(entry, "quantization", None)
        and manifest.limits == getattr(entry, "limits", None)
        and all(g.passed for g in manifest.gates)
    )


def ensure_artifact(name: str) -> Path:
    """The catalog model's artifact dir, built with `maas build` logic when missing or stale."""
    from model_build.build import artifacts_root, build_model
    from model_build.catalog import get_entry

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    entry = get_entry(name)
    artifact = artifacts_root() / name
    if not _fresh(artifact, entry):
        build_model(entry, artifact_dir=artifact)
    return artifact


@pytest.fixture(scope="session")
def built_artifacts() -> dict[str, Path]:
    """model name → artifact dir for the default models, built with `maas build` logic when needed."""
    return {name: ensure_artifact(name) for name in DEFAULT_MODELS}


@pytest.fixture(scope="session")
def lambda_python() -> Path:
    from infra import packaging

    return packaging.lambda_python()  # raises, saying how to provide it, when CPython 3.13 is missing


@pytest.fixture(scope="session")
def lambda_deps(tmp_path_factory: pytest.TempPathFactory, lambda_python: Path) -> Path:
    """``build/lambda-deps`` as a fresh clone gets it: both architectures, every set, built for real."""
    from infra import build_deps, packaging

    out = tmp_path_factory.mktemp("lambda-deps")
    for arch in packaging.ARCHITECTURES:
        build_deps.main(["--arch", arch, "--out", str(out), "--lambda-python", str(lambda_python)])
    return out


@pytest.fixture(scope="session")
def registry(built_artifacts: dict[str, Path]):  # type: ignore[no-untyped-def]
    from functions.inference.registry import registry_from_settings
    from functions.settings import Settings

    reg = registry_from_settings(Settings(models=",".join(str(p) for p in built_artifacts.values())))
    assert reg.ready, reg.failures
    return reg


@pytest.fixture(scope="session")
def client(registry):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from functions.web.app import create_app

    with TestClient(create_app(registry), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def live_server(registry) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from maas_dev.server import BackgroundServer

    with BackgroundServer(registry) as server:
        yield server.url


@pytest.fixture(autouse=True)
def _fresh_process_caches() -> Iterator[None]:
    """Each test sees settings, registry and AWS clients built from its own environment, as a new process would."""
    from functions.batch.s3io import clear_clients
    from functions.inference import registry as registry_module
    from functions.settings import get_settings

    def clear() -> None:
        get_settings.cache_clear()
        get_settings.cache_clear()
        registry_module.get_registry.cache_clear()
        clear_clients()

    clear()
    yield
    clear()
