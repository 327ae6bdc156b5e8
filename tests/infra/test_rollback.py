"""GIVEN a model deployed as the synthesized template describes it (its functions' tags, retained versions
whose descriptions name the artifact they serve, `live` aliases) WHEN an operator runs `maas rollback` THEN
every alias moves to the previous version, or to the version serving the artifact named with --to, and a
version that no longer exists is refused by name (moto's Lambda API stands in for the account)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from typer.testing import CliRunner

from maas_dev.cli import app as cli
from tests.infra.conftest import STAGE, Synth

MODEL = "minilm-embed"
REGION = "eu-west-1"


def _template_functions(default_app: Synth) -> list[dict[str, Any]]:
    resources = default_app.json(f"maas-{STAGE}-model-{MODEL}")["Resources"]
    return [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"].startswith("functions.handlers.")
    ]


@pytest.fixture
def deployed(default_app: Synth, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, str]]]:
    """Three functions tagged as the template tags them, each deployed twice (artifact v1, then v2)."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        iam = boto3.client("iam")
        role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        client = boto3.client("lambda")
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("index.py", "def handler(event, context):\n    return event\n")
        names: dict[str, str] = {}
        for props in _template_functions(default_app):
            tags = {t["Key"]: t["Value"] for t in props["Tags"]}
            kind = tags["maas:function"]
            name = f"fn-{kind}"
            client.create_function(
                FunctionName=name, Runtime=props["Runtime"], Role=role, Handler=props["Handler"],
                Code={"ZipFile": code.getvalue()}, Tags=tags,
            )  # fmt: skip
            for artifact in ("aaaa000011112222", "bbbb333344445555"):  # two deploys: each publishes a version
                client.update_function_configuration(FunctionName=name, Description=artifact)
                client.publish_version(FunctionName=name, Description=f"maas artifact {artifact}")
            client.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
            names[kind] = name
        yield client, names


def test_the_template_tags_functions_and_describes_versions_the_way_rollback_reads_them(default_app: Synth) -> None:
    resources = default_app.json(f"maas-{STAGE}-model-{MODEL}")["Resources"]
    kinds = sorted(
        {t["Value"] for p in _template_functions(default_app) for t in p["Tags"] if t["Key"] == "maas:function"}
    )
    assert kinds == ["chunk", "http", "s3", "sqs"]
    versions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Version"]
    assert {v["Properties"]["Description"].split()[:2] == ["maas", "artifact"] for v in versions} == {True}


def test_rollback_moves_every_alias_to_the_previous_version(deployed: tuple[Any, dict[str, str]]) -> None:
    client, names = deployed
    result = CliRunner().invoke(cli, ["rollback", MODEL, "--stage", STAGE, "--region", REGION])
    assert result.exit_code == 0, result.output
    for name in names.values():
        assert client.get_alias(FunctionName=name, Name="live")["FunctionVersion"] == "1"
        assert f"{name} " in result.stdout and "live 2 -> 1" in result.stdout


def test_rollback_to_a_named_artifact_version_and_back(deployed: tuple[Any, dict[str, str]]) -> None:
    client, names = deployed
    runner = CliRunner()
    assert runner.invoke(cli, ["rollback", MODEL, "--stage", STAGE, "--to", "aaaa000011112222"]).exit_code == 0
    assert {client.get_alias(FunctionName=n, Name="live")["FunctionVersion"] for n in names.values()} == {"1"}
    assert runner.invoke(cli, ["rollback", MODEL, "--stage", STAGE, "--to", "bbbb333344445555"]).exit_code == 0
    assert {client.get_alias(FunctionName=n, Name="live")["FunctionVersion"] for n in names.values()} == {"2"}


def test_rollback_refuses_what_does_not_exist_and_moves_nothing(deployed: tuple[Any, dict[str, str]]) -> None:
    client, names = deployed
    runner = CliRunner()
    missing = runner.invoke(cli, ["rollback", MODEL, "--stage", STAGE, "--to", "cccc666677778888"])
    assert missing.exit_code == 1 and "no version serves artifact cccc666677778888" in missing.output
    assert "aaaa000011112222" in missing.output  # says what is retained
    other = runner.invoke(cli, ["rollback", "intent-classifier", "--stage", STAGE])
    assert other.exit_code == 1 and "no functions of model 'intent-classifier'" in other.output
    assert {client.get_alias(FunctionName=n, Name="live")["FunctionVersion"] for n in names.values()} == {"2"}
