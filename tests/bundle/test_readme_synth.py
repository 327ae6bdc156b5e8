"""GIVEN a fresh clone after the README's steps WHEN `cdk synth` runs as the README says THEN the shipped catalog
synthesizes strictly, with cdk-nag on and no unacknowledged finding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bundle.conftest import ACCOUNT, REGION, STAGE
from tests.conftest import ensure_artifact

pytestmark = pytest.mark.slow


def test_the_readme_deploy_steps_synthesize_strictly_with_the_shipped_catalog(
    tmp_path_factory: pytest.TempPathFactory, lambda_deps: Path
) -> None:
    """GIVEN a fresh clone after the README's steps (the dev stage's models built, `infra.build_deps` for both
    architectures) WHEN `cdk synth` runs with cdk.json's defaults (dev stage, strict packaging, cdk-nag on)
    THEN it synthesizes every stack of the shipped catalog the stage deploys, with no finding."""
    from infra.app import build_app
    from infra.settings import load_environment

    env = {"CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION}  # what the CDK CLI sets from a profile
    settings = load_environment({"configFile": "infra/stages/dev.toml"}.get, env)
    for name in settings.models:
        ensure_artifact(name)
    tmp = tmp_path_factory.mktemp("readme-synth")
    context = {"lambdaDepsDir": str(lambda_deps), "stagingDir": str(tmp / "s")}  # build/ in a real clone
    app = build_app(context, outdir=str(tmp / "cdk.out"), environ=env)
    app.synth()  # raises on any unacknowledged cdk-nag finding
    stacks = {child.node.id for child in app.node.children}
    assert stacks >= {f"maas-{STAGE}-shared", f"maas-{STAGE}-api"} | {
        f"maas-{STAGE}-model-{m}" for m in settings.models
    }
    assert f"maas-{STAGE}-model-minilm-embed-gpu" not in stacks  # the GPU model is opt-in per stage
    report = json.loads((tmp / "cdk.out" / "validation-report.json").read_text())
    (nag,) = report["pluginReports"]
    assert nag["conclusion"] == "success" and nag["violations"] == []  # only acknowledged findings, with reasons
