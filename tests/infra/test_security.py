"""GIVEN every synthesized stack THEN IAM is least privilege: no wildcard actions anywhere, each model
reads only its own artifact/input prefixes and writes only its own output prefix, KMS use is bound to
S3, and data rests encrypted (queues, tables, buckets)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.infra.conftest import Synth

IAM_TYPES = ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::Role")
S3_OBJECT_ARN = re.compile(r"^arn:aws:s3:::(?P<bucket>[^/]+)/(?P<key>.+)$")


def _statements(resources: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for logical_id, resource in resources.items():
        if resource["Type"] not in IAM_TYPES:
            continue
        props = resource["Properties"]
        documents = [props.get("PolicyDocument")] + [p["PolicyDocument"] for p in props.get("Policies", [])]
        for document in filter(None, documents):
            for statement in document["Statement"]:
                yield logical_id, statement


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module", params=["default_app", "variant_app"])
def app(request: pytest.FixtureRequest) -> Synth:
    synth: Synth = request.getfixturevalue(request.param)
    return synth


def test_no_wildcard_actions_in_any_iam_policy(app: Synth) -> None:
    for stack_name in app.stacks:
        for logical_id, statement in _statements(app.json(stack_name)["Resources"]):
            for action in _as_list(statement.get("Action", [])):
                assert "*" not in action, f"{stack_name}/{logical_id}: wildcard action {action!r}"
            assert "NotAction" not in statement, f"{stack_name}/{logical_id}: NotAction"


def _runtime_env(resources: dict[str, Any]) -> dict[str, Any]:
    """The MAAS_* settings of the model's Lambda functions or ECS containers (they all agree)."""
    for resource in resources.values():
        if resource["Type"] == "AWS::Lambda::Function" and "MAAS_MODELS" in str(resource):
            env: dict[str, Any] = resource["Properties"]["Environment"]["Variables"]
            return env
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            container = resource["Properties"]["ContainerDefinitions"][0]
            return {item["Name"]: item["Value"] for item in container["Environment"]}
    raise AssertionError("no runtime found")


# What each kind of S3 resource may be granted: reads of artifacts and inputs, writes only of outputs.
_OBJECT_READ = {"s3:GetObject", "s3:GetObjectVersion"}
_OBJECT_WRITE = {"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}


def test_each_model_touches_only_its_own_s3_prefixes(app: Synth) -> None:
    for model, stack_name in app.model_stacks().items():
        resources = app.json(stack_name)["Resources"]
        env = _runtime_env(resources)
        batch_bucket = env["MAAS_BATCH_BUCKET"]
        readable = (f"models/{model}/", env["MAAS_INPUT_PREFIX"], env["MAAS_OUTPUT_PREFIX"])
        for logical_id, statement in _statements(resources):
            actions = set(_as_list(statement["Action"]))
            if not any(a.startswith("s3:") and "Notification" not in a for a in actions):
                continue
            where = f"{stack_name}/{logical_id}"
            if actions == {"s3:ListBucket"}:  # 404 for missing keys; names only, on the batch bucket alone
                assert _as_list(statement["Resource"]) == [f"arn:aws:s3:::{batch_bucket}"], where
                continue
            if actions == {"s3:DeleteObject"}:  # a chunked job deletes its own run files, and nothing else
                runs = f"arn:aws:s3:::{batch_bucket}/{env['MAAS_OUTPUT_PREFIX']}.runs/*"
                assert _as_list(statement["Resource"]) == [runs], where
                continue
            assert actions <= _OBJECT_READ | _OBJECT_WRITE, f"{where}: {actions}"
            for resource in _as_list(statement["Resource"]):
                match = S3_OBJECT_ARN.match(resource)
                assert match, f"{where}: S3 access must name object ARNs, got {resource}"
                allowed = (env["MAAS_OUTPUT_PREFIX"],) if actions & _OBJECT_WRITE else readable
                assert match["key"].rstrip("*").startswith(allowed), (
                    f"{where}: {resource} is outside {model}'s own prefixes {allowed}"
                )
                if "s3:GetObjectVersion" in actions:
                    assert match["key"] == env["MAAS_INPUT_PREFIX"] + "*", where


def test_kms_is_only_usable_through_s3(app: Synth) -> None:
    for stack_name in app.model_stacks().values():
        for logical_id, statement in _statements(app.json(stack_name)["Resources"]):
            actions = set(_as_list(statement["Action"]))
            if any(a.startswith("kms:") for a in actions):
                assert actions <= {"kms:Decrypt", "kms:GenerateDataKey"}, logical_id
                via = statement["Condition"]["StringEquals"]["kms:ViaService"]
                assert via.startswith("s3.") and via.endswith(".amazonaws.com")


def test_queues_and_tables_are_encrypted_and_queues_refuse_plain_http(app: Synth) -> None:
    for stack_name in app.model_stacks().values():
        resources = app.json(stack_name)["Resources"]
        queues = {k: r for k, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
        assert queues
        for queue_id, queue in queues.items():
            assert queue["Properties"].get("SqsManagedSseEnabled") or queue["Properties"].get("KmsMasterKeyId")
            policies = [
                r
                for r in resources.values()
                if r["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": queue_id} in r["Properties"]["Queues"]
            ]
            assert any(
                s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                for p in policies
                for s in p["Properties"]["PolicyDocument"]["Statement"]
            ), f"{stack_name}/{queue_id} must deny non-TLS access"
        for table in (r for r in resources.values() if r["Type"] == "AWS::DynamoDB::Table"):
            assert table["Properties"]["SSESpecification"]["SSEEnabled"] is True
