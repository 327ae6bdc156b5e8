"""A synthesized stage served on loopback as deployed: its functions from their built bundles, AWS from moto.

:func:`local_stage` starts a moto server holding what the functions' environment names (every DynamoDB table of the
templates: the key table, the idempotency tables) and an API Gateway key per tenant of the usage plans, then the
:class:`~maas_dev.gateway.server.LocalGateway` in front of the functions' execution environments. ``maas keys``
works against it (``--endpoint-url``), and :meth:`LocalStage.create_key` makes a key directly.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from maas_dev.gateway.environments import Environments
from maas_dev.gateway.server import LocalGateway
from maas_dev.gateway.stage import FunctionDef, Stage, load_stage
from maas_dev.keys import KeyStore
from maas_dev.local_aws import moto_server
from maas_dev.task_roots import image_task_root, zip_task_root

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_SESSION_TOKEN": "local"}


def host_architecture() -> str:
    """This machine's Lambda architecture name (its bundles must run here)."""
    return "arm64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"


@dataclass
class TaskRoots:
    """Each function's task root, built once per asset (and image target) under ``work``."""

    work: Path
    lambda_deps: Path
    architecture: str = field(default_factory=host_architecture)
    built: dict[tuple[Path, str | None], Path] = field(default_factory=dict)

    def __call__(self, function: FunctionDef) -> Path:
        key = (function.asset, function.image_target)
        if key not in self.built:
            out = self.work / f"{function.asset.name}-{function.image_target or 'zip'}"
            if function.image_target is None:
                self.built[key] = zip_task_root(function.asset, out)
            else:
                self.built[key] = image_task_root(
                    function.asset,
                    out,
                    task=_task(function.asset),
                    lambda_deps=self.lambda_deps,
                    target=function.image_target,
                    architecture=self.architecture,
                )
        return self.built[key]


def _task(context: Path) -> str:
    """The task of the model an image context carries (its artifact's manifest)."""
    manifests = sorted((context / "artifacts").glob("*/manifest.json"))
    return str(json.loads(manifests[0].read_text(encoding="utf-8"))["task"]) if manifests else ""


@dataclass
class LocalStage:
    """A served stage: its gateway, the local AWS endpoint, and the tenants' usage-plan keys."""

    stage: Stage
    gateway: LocalGateway
    aws_endpoint: str
    usage_keys: Mapping[str, str]

    @property
    def url(self) -> str:
        return self.gateway.url

    def key_store(self) -> KeyStore:
        return KeyStore(
            self.stage.name,
            dynamodb=_client("dynamodb", self.aws_endpoint, self.stage.region),
            apigateway=_client("apigateway", self.aws_endpoint, self.stage.region),
        )

    def create_key(self, tenant: str) -> str:
        """A new bearer key for ``tenant`` (as ``maas keys create`` makes it)."""
        return self.key_store().create(tenant, description="local gateway").key


def _client(service: str, endpoint: str, region: str) -> Any:
    lowered = {name.lower(): value for name, value in CREDENTIALS.items()}
    return boto3.client(service, endpoint_url=endpoint, region_name=region, **lowered)


@contextmanager
def local_stage(
    outdir: Path,
    stage_name: str,
    *,
    task_root: Callable[[FunctionDef], Path],
    python: Path,
    runtime_dir: Path | None,
    port: int = 0,
    environment: Mapping[str, str] | None = None,
) -> Iterator[LocalStage]:
    """Serve the synthesized stage ``stage_name`` of ``outdir`` on loopback until the block ends."""
    stage = load_stage(outdir, stage_name)
    with moto_server() as endpoint:
        # (moto keeps one state per process: what an earlier local stage made is reused, not made twice)
        dynamodb = _client("dynamodb", endpoint, stage.region)
        existing = set(dynamodb.list_tables()["TableNames"])
        for name, props in stage.tables.items():
            if name not in existing:
                dynamodb.create_table(
                    TableName=name,
                    BillingMode="PAY_PER_REQUEST",
                    KeySchema=props["KeySchema"],
                    AttributeDefinitions=props["AttributeDefinitions"],
                )
        apigateway = _client("apigateway", endpoint, stage.region)
        usage_keys = {}
        for name in sorted({name for plan in stage.usage_plans for name in plan.key_names}):
            found = apigateway.get_api_keys(nameQuery=name, includeValues=True).get("items", [])
            same = [item["value"] for item in found if item.get("name") == name]
            usage_keys[name] = same[0] if same else apigateway.create_api_key(name=name, enabled=True)["value"]

        def function_environment(function: FunctionDef) -> dict[str, str]:
            return {
                **function.environment,
                **CREDENTIALS,
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_REGION": stage.region,
                "AWS_DEFAULT_REGION": stage.region,
                "AWS_LAMBDA_FUNCTION_NAME": function.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_mb),
                **(environment or {}),
            }

        environments = Environments(task_root, function_environment, python=python, runtime_dir=runtime_dir)
        with LocalGateway(stage, environments, usage_keys, port=port) as gateway:
            yield LocalStage(stage, gateway, endpoint, usage_keys)


def synthesize_for_this_machine(
    work: Path, *, config_file: str = "infra/stages/dev.toml", lambda_deps: Path, artifacts: Path, catalog: Path
) -> Path:
    """The stage synthesized strictly (as `cdk synth` does) with its Lambda models built for this machine's CPU, so
    their bundles run here; returns the cloud assembly directory."""
    from infra.app import build_app
    from infra.settings import load_environment

    architecture = host_architecture()
    settings = load_environment({"configFile": config_file}.get, {"CDK_DEFAULT_ACCOUNT": "123456789012",
                                                                  "CDK_DEFAULT_REGION": "us-east-1"})  # fmt: skip
    text = catalog.read_text(encoding="utf-8")
    for other in ("arm64", "x86_64"):
        text = text.replace(f'architecture = "{other}"', f'architecture = "{architecture}"')
    work.mkdir(parents=True, exist_ok=True)
    (work / "catalog.toml").write_text(text, encoding="utf-8")
    context = {
        "configFile": config_file,
        "account": settings.account,
        "region": settings.region,
        "packaging": "strict",
        "nag": "false",
        "catalog": str(work / "catalog.toml"),
        "lambdaDepsDir": str(lambda_deps),
        "stagingDir": str(work / "staging"),
        "artifactsDir": str(artifacts),
    }
    outdir = work / "cdk.out"
    build_app(context, outdir=str(outdir), environ={}).synth()
    return outdir
