"""Bundle fixtures, once per session: the dev stage synthesized strictly for this machine's CPU (x86_64) and as it
ships (arm64, run under QEMU), each function's task root built as it is deployed (a zip unzipped; an image's task
root for its build target), and the boto3 the managed runtime provides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from maas_dev import emulation
from maas_dev.emulation import Arm64Python
from maas_dev.gateway.local import TaskRoots
from maas_dev.lambda_bundle import runtime_provided_dir
from tests.conftest import ensure_artifact

REPO = Path(__file__).resolve().parents[2]
ACCOUNT, REGION, STAGE = "123456789012", "eu-west-1", "dev"


def _synthesize(tmp: Path, lambda_deps: Path, catalog_text: str) -> Path:
    """The dev stage's cloud assembly for ``catalog_text`` (strict packaging: the built artifacts and dependencies)."""
    from infra.app import build_app
    from infra.settings import load_environment

    settings = load_environment(
        {"configFile": "infra/stages/dev.toml"}.get, {"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION}
    )
    for name in settings.models:
        ensure_artifact(name)
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
def synthesized_stage(tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path) -> Path:
    """The dev stage, its Lambda models built for x86_64: what this machine runs natively."""
    catalog_text = (REPO / "catalog.toml").read_text().replace('architecture = "arm64"', 'architecture = "x86_64"')
    return _synthesize(tmp_path_factory.mktemp("bundle-stage"), lambda_deps, catalog_text)


@pytest.fixture(scope="session")
def synthesized_arm64_stage(tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path) -> Path:
    """The dev stage as it ships: its Lambda models on arm64, the catalog's default."""
    catalog_text = (REPO / "catalog.toml").read_text()
    assert 'architecture = "x86_64"' not in catalog_text  # every Lambda model deploys on arm64
    return _synthesize(tmp_path_factory.mktemp("bundle-stage-arm64"), lambda_deps, catalog_text)


@pytest.fixture(scope="session")
def task_roots(tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path) -> TaskRoots:
    """Each function's task root, built on first use and shared by every bundle test."""
    return TaskRoots(work=tmp_path_factory.mktemp("task-roots"), lambda_deps=lambda_deps, architecture="x86_64")


@pytest.fixture(scope="session")
def arm64_task_roots(tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path) -> TaskRoots:
    return TaskRoots(work=tmp_path_factory.mktemp("task-roots-arm64"), lambda_deps=lambda_deps, architecture="arm64")


@pytest.fixture(scope="session")
def arm64_python() -> Arm64Python:
    """Lambda's CPython for aarch64 under QEMU (``python -m maas_dev.emulation``; `make test` makes it first)."""
    try:
        return emulation.find()
    except emulation.EmulationUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runtime_provided_dir(tmp_path_factory.mktemp("runtime"), Path(boto3.__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def aws() -> Iterator[dict[str, str]]:
    """A local AWS (moto server on loopback) holding what the template's environment names: one per session, as
    moto keeps its state per process (a second server would find the first one's bucket)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "t"}
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint, **_lower(credentials))
    bucket = f"maas-{STAGE}-batch-{ACCOUNT}-{REGION}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    yield {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, **credentials,
           "BUCKET": bucket}  # fmt: skip
    server.stop()


def _lower(credentials: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in credentials.items()}
