"""Bundle fixtures, once per session: the dev stage synthesized strictly for this machine's CPU (x86_64), each
function's task root built as it is deployed (a zip unzipped; an image's task root for its build target), and the
boto3 the managed runtime provides."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from maas_dev.gateway.local import TaskRoots
from maas_dev.lambda_bundle import runtime_provided_dir
from tests.conftest import ensure_artifact

REPO = Path(__file__).resolve().parents[2]
ACCOUNT, REGION, STAGE = "123456789012", "eu-west-1", "dev"


@pytest.fixture(scope="session")
def synthesized_stage(tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path) -> Path:
    """The dev stage's cloud assembly (strict packaging: the built artifacts and dependencies), for x86_64."""
    from infra.app import build_app
    from infra.settings import load_environment

    tmp = tmp_path_factory.mktemp("bundle-stage")
    settings = load_environment(
        {"configFile": "infra/stages/dev.toml"}.get, {"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION}
    )
    for name in settings.models:
        ensure_artifact(name)
    # this machine runs x86_64: the same stage, its Lambda models built for x86_64
    catalog_text = (REPO / "catalog.toml").read_text().replace('architecture = "arm64"', 'architecture = "x86_64"')
    (tmp / "catalog.toml").write_text(catalog_text)
    context = {
        "account": ACCOUNT,
        "region": REGION,
        "packaging": "strict",
        "nag": "false",
        "catalog": str(tmp / "catalog.toml"),
        "lambdaDepsDir": str(lambda_deps),
        "stagingDir": str(tmp / "staging"),
        "artifactsDir": str(REPO / "artifacts"),
    }
    outdir = tmp / "cdk.out"
    build_app(context, outdir=str(outdir), environ={}).synth()
    return outdir


@pytest.fixture(scope="session")
def task_roots(tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path) -> TaskRoots:
    """Each function's task root, built on first use and shared by every bundle test."""
    return TaskRoots(work=tmp_path_factory.mktemp("task-roots"), lambda_deps=lambda_deps, architecture="x86_64")


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_provided_dir(tmp_path_factory.mktemp("runtime"), Path(boto3.__file__).resolve().parents[1])
