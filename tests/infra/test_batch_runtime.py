"""GIVEN every model's batch runtime (S3 function, SQS function, GPU queue worker) THEN infra honours the
contract of functions/batch (docs/batch.md): ExpectedBucketOwner everywhere, replies only to the model's
reply folder and queues, batch timeouts of their own, exactly the S3/DynamoDB actions each path calls,
a DynamoDB idempotency store for the batch consumers only, and a worker wired to its queue.

Everything is asserted on resource properties (handlers, commands, ARNs, environment), never on
logical ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from functions.contract.deployment import IDEMPOTENCY_DIR, IDEMPOTENCY_TTL_DAYS
from tests.infra.conftest import ACCOUNT, REGION, REPO, STAGE, VARIANT_MODELS, Synth

BATCH_BUCKET = f"maas-{STAGE}-batch-{ACCOUNT}-{REGION}"
BUCKET_ARN = f"arn:aws:s3:::{BATCH_BUCKET}"
DEFAULT_BATCH_TIMEOUT_S = 300
IDEMPOTENCY_ACTIONS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


@dataclass
class Runtime:
    """One process the model runs as: a Lambda function or an ECS container, with its role's statements."""

    model: str
    kind: str  # http | s3 | sqs | chunk | server | worker
    props: dict[str, Any]
    env: dict[str, Any]
    statements: list[dict[str, Any]]

    def s3_statements(self) -> list[dict[str, Any]]:
        return [s for s in self.statements if any(a.startswith("s3:") for a in _as_list(s["Action"]))]

    def actions_on(self, resource: str) -> set[str]:
        return {a for s in self.statements if resource in _as_list(s["Resource"]) for a in _as_list(s["Action"])}

    def all_actions(self) -> set[str]:
        return {a for s in self.statements for a in _as_list(s["Action"])}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _role_statements(resources: dict[str, Any], role_ref: Any) -> list[dict[str, Any]]:
    """Every statement of the role a function or task points at (``Fn::GetAtt [role, Arn]``)."""
    role_id = role_ref["Fn::GetAtt"][0]
    statements: list[dict[str, Any]] = []
    for resource in resources.values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy" and {"Ref": role_id} in props["Roles"]:
            statements += props["PolicyDocument"]["Statement"]
    for policy in resources[role_id]["Properties"].get("Policies", []):
        statements += policy["PolicyDocument"]["Statement"]
    return statements


_LAMBDA_KINDS = {f"functions.handlers.{kind}.handler": kind for kind in ("http", "s3", "sqs", "chunk")}


def runtimes(app: Synth) -> Iterator[Runtime]:
    """Every maas runtime of every model stack of ``app``."""
    for model, stack_name in app.model_stacks().items():
        resources = app.json(stack_name)["Resources"]
        for resource in resources.values():
            props = resource.get("Properties", {})
            if resource["Type"] == "AWS::Lambda::Function":
                entry = props.get("Handler") or props.get("ImageConfig", {}).get("Command", [""])[0]
                if entry in _LAMBDA_KINDS:
                    yield Runtime(
                        model,
                        _LAMBDA_KINDS[entry],
                        props,
                        props["Environment"]["Variables"],
                        _role_statements(resources, props["Role"]),
                    )
            elif resource["Type"] == "AWS::ECS::TaskDefinition":
                (container,) = [c for c in props["ContainerDefinitions"] if "FirelensConfiguration" not in c]
                kind = (
                    "worker" if container["Command"][:3] == ["python", "-m", "functions.handlers.worker"] else "server"
                )
                env = {item["Name"]: item["Value"] for item in container["Environment"]}
                yield Runtime(model, kind, container, env, _role_statements(resources, props["TaskRoleArn"]))


@pytest.fixture(scope="module", params=["default_app", "variant_app"])
def app(request: pytest.FixtureRequest) -> Synth:
    synth: Synth = request.getfixturevalue(request.param)
    return synth


@pytest.fixture(scope="module")
def models(app: Synth, catalog: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The catalog ``app`` was synthesized from."""
    return VARIANT_MODELS if set(app.model_stacks()) == set(VARIANT_MODELS) else catalog


@pytest.fixture(scope="module")
def all_runtimes(app: Synth) -> list[Runtime]:
    found = list(runtimes(app))
    kinds = {r.kind for r in found}
    assert {"http", "s3", "sqs", "chunk", "server", "worker"} <= kinds, kinds  # both targets are exercised
    return found


def _prefixes(runtime: Runtime) -> tuple[str, str]:
    return runtime.env["MAAS_INPUT_PREFIX"], runtime.env["MAAS_OUTPUT_PREFIX"]


def _deploy(models: dict[str, dict[str, Any]], model: str) -> dict[str, Any]:
    deploy: dict[str, Any] = models[model]["deploy"]
    return deploy


# --- 1. ExpectedBucketOwner ------------------------------------------------------------------------


def test_every_runtime_that_touches_s3_sends_the_account_as_expected_bucket_owner(
    all_runtimes: list[Runtime],
) -> None:
    touching = [r for r in all_runtimes if r.s3_statements() or r.env["MAAS_MODELS"].startswith("s3://")]
    assert {r.kind for r in touching} >= {"s3", "sqs", "worker"}
    for runtime in all_runtimes:  # the HTTP paths too: one environment contract for the whole model
        assert runtime.env["MAAS_EXPECTED_BUCKET_OWNER"] == ACCOUNT, (runtime.model, runtime.kind)


# --- 2. replies: the model's reply folder and reply queues, nothing else -------------------------


def test_reply_allowlist_is_the_reply_folder_plus_the_models_reply_queues(
    all_runtimes: list[Runtime], models: dict[str, dict[str, Any]]
) -> None:
    for runtime in all_runtimes:
        _, output_prefix = _prefixes(runtime)
        arns = [arn.split(":") for arn in _deploy(models, runtime.model).get("reply_queue_arns", [])]
        queues = [f"https://sqs.{region}.amazonaws.com/{account}/{name}" for *_, region, account, name in arns]
        entries = runtime.env["MAAS_REPLY_ALLOWLIST"].split(",")
        assert entries == [f"s3://{BATCH_BUCKET}/{output_prefix}replies/", *queues], runtime.model
        assert not any(e.rstrip("/") == f"s3://{BATCH_BUCKET}/{output_prefix}".rstrip("/") for e in entries)


def test_sqs_function_writes_only_below_the_reply_folder_and_to_its_reply_queues(
    all_runtimes: list[Runtime], models: dict[str, dict[str, Any]]
) -> None:
    checked = 0
    for runtime in (r for r in all_runtimes if r.kind == "sqs"):
        _, output_prefix = _prefixes(runtime)
        reply_objects = f"{BUCKET_ARN}/{output_prefix}replies/*"
        batch = [s for s in runtime.s3_statements() if any(r.startswith(BUCKET_ARN) for r in _as_list(s["Resource"]))]
        assert [_as_list(s["Resource"]) for s in batch] == [[reply_objects]], runtime.model
        assert {a for s in batch for a in _as_list(s["Action"])} == {"s3:PutObject"}
        # Anything else it reads is its own published artifact (model_source = "s3"), read-only.
        assert all(
            _as_list(s["Action"]) == ["s3:GetObject"] and "/models/" in str(s["Resource"])
            for s in runtime.s3_statements()
            if s not in batch
        )
        sends = [s for s in runtime.statements if "sqs:SendMessage" in _as_list(s["Action"])]
        assert sorted(r for s in sends for r in _as_list(s["Resource"])) == sorted(
            _deploy(models, runtime.model).get("reply_queue_arns", [])
        )
        checked += 1
    assert checked >= 2


# --- 3. timeouts: batch functions get batch_timeout_s, only HTTP is bound by API Gateway -----------


def test_batch_functions_run_far_longer_than_the_http_function(
    all_runtimes: list[Runtime], models: dict[str, dict[str, Any]]
) -> None:
    for model in {r.model for r in all_runtimes if r.kind == "http"}:
        by_kind = {r.kind: r.props for r in all_runtimes if r.model == model}
        expected = _deploy(models, model).get("batch_timeout_s", DEFAULT_BATCH_TIMEOUT_S)
        assert by_kind["http"]["Timeout"] == _deploy(models, model)["timeout_s"] <= 29, model  # API Gateway
        for kind in ("s3", "sqs"):
            assert by_kind[kind]["Timeout"] == expected, (model, kind)
            assert by_kind[kind]["Timeout"] >= 4 * by_kind["http"]["Timeout"], (model, kind)


# --- 4. the S3 job's permissions ------------------------------------------------------------------


def _assert_s3_job_access(runtime: Runtime) -> None:
    input_prefix, output_prefix = _prefixes(runtime)
    assert runtime.actions_on(f"{BUCKET_ARN}/{input_prefix}*") == {"s3:GetObject", "s3:GetObjectVersion"}
    assert runtime.actions_on(f"{BUCKET_ARN}/{output_prefix}*") == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
    }
    # 404 (not 403) for a missing summary or an object deleted since its event.
    assert runtime.actions_on(BUCKET_ARN) == {"s3:ListBucket"}
    batch_objects = {
        r for s in runtime.s3_statements() for r in _as_list(s["Resource"]) if r.startswith(f"{BUCKET_ARN}/")
    }
    assert batch_objects == {f"{BUCKET_ARN}/{input_prefix}*", f"{BUCKET_ARN}/{output_prefix}*"}
    assert "s3:DeleteObject" not in runtime.all_actions()  # idempotency records live in DynamoDB
    kms = [s for s in runtime.statements if any(a.startswith("kms:") for a in _as_list(s["Action"]))]
    assert kms and all(
        s["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}} for s in kms
    )
    assert {a for s in kms for a in _as_list(s["Action"])} == {"kms:Decrypt", "kms:GenerateDataKey"}


def test_s3_jobs_read_the_announced_version_and_stream_their_output(all_runtimes: list[Runtime]) -> None:
    consumers = [r for r in all_runtimes if r.kind in ("s3", "worker")]
    assert {r.kind for r in consumers} == {"s3", "worker"}
    for runtime in consumers:
        _assert_s3_job_access(runtime)


def test_chunked_job_steps_have_the_s3_jobs_access_and_delete_only_their_own_run_files(
    all_runtimes: list[Runtime],
) -> None:
    chunks = [r for r in all_runtimes if r.kind == "chunk"]
    assert chunks
    for runtime in chunks:
        input_prefix, output_prefix = _prefixes(runtime)
        assert runtime.actions_on(f"{BUCKET_ARN}/{input_prefix}*") == {"s3:GetObject", "s3:GetObjectVersion"}
        assert runtime.actions_on(f"{BUCKET_ARN}/{output_prefix}*") == {
            "s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
        deletes = [s for s in runtime.statements if "s3:DeleteObject" in _as_list(s["Action"])]
        assert [_as_list(s["Resource"]) for s in deletes] == [[f"{BUCKET_ARN}/{output_prefix}.runs/*"]]
        assert _as_list(deletes[0]["Action"]) == ["s3:DeleteObject"]
        assert int(runtime.env["MAAS_CHUNK_BYTES"]) >= 1024  # the model's own: 7.3 KiB (generator) to MiBs


def test_the_runtimes_that_finish_s3_jobs_announce_them_on_the_default_bus(all_runtimes: list[Runtime]) -> None:
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
    for runtime in all_runtimes:
        puts = [s for s in runtime.statements if "events:PutEvents" in _as_list(s["Action"])]
        if runtime.kind in ("s3", "chunk", "worker"):
            assert runtime.env["MAAS_JOB_EVENT_BUS"] == "default", (runtime.model, runtime.kind)
            assert [(_as_list(s["Action"]), _as_list(s["Resource"])) for s in puts] == [(["events:PutEvents"], [bus])]
        else:
            assert "MAAS_JOB_EVENT_BUS" not in runtime.env and not puts, (runtime.model, runtime.kind)


def test_http_paths_touch_no_batch_data(all_runtimes: list[Runtime]) -> None:
    for runtime in (r for r in all_runtimes if r.kind in ("http", "server")):
        resources = {r for s in runtime.s3_statements() for r in _as_list(s["Resource"])}
        assert not any(r.startswith(BUCKET_ARN) for r in resources), (runtime.model, runtime.kind)


def test_idempotency_table_belongs_to_the_batch_consumers_only(app: Synth, all_runtimes: list[Runtime]) -> None:
    for runtime in all_runtimes:
        resources = app.json(f"maas-{STAGE}-model-{runtime.model}")["Resources"]
        (table_id,) = [k for k, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"]
        dynamo = [s for s in runtime.statements if any(a.startswith("dynamodb:") for a in _as_list(s["Action"]))]
        if runtime.kind in ("s3", "sqs", "chunk", "worker"):
            assert runtime.env["MAAS_IDEMPOTENCY_TABLE"] == {"Ref": table_id}
            assert int(runtime.env["MAAS_IDEMPOTENCY_TTL_SECONDS"]) == IDEMPOTENCY_TTL_DAYS * 86400
            assert len(dynamo) == 1 and set(_as_list(dynamo[0]["Action"])) == IDEMPOTENCY_ACTIONS
            assert _as_list(dynamo[0]["Resource"]) == [{"Fn::GetAtt": [table_id, "Arn"]}]
        else:
            assert "MAAS_IDEMPOTENCY_TABLE" not in runtime.env and not dynamo, (runtime.model, runtime.kind)


def test_idempotency_table_is_on_demand_encrypted_recoverable_and_expires_records(app: Synth) -> None:
    for stack_name in app.model_stacks().values():
        tables = [r for r in app.json(stack_name)["Resources"].values() if r["Type"] == "AWS::DynamoDB::Table"]
        assert len(tables) == 1, stack_name
        props = tables[0]["Properties"]
        assert props["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
        assert props["AttributeDefinitions"] == [{"AttributeName": "id", "AttributeType": "S"}]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert props["SSESpecification"]["SSEEnabled"] is True
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}


def _batch_bucket(app: Synth) -> dict[str, Any]:
    (bucket,) = [
        r["Properties"]
        for r in app.json(f"maas-{STAGE}-shared")["Resources"].values()
        if r["Type"] == "AWS::S3::Bucket" and r["Properties"].get("BucketName") == BATCH_BUCKET
    ]
    return bucket


def test_batch_bucket_is_versioned_and_expires_what_versioning_keeps(app: Synth) -> None:
    bucket = _batch_bucket(app)
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = bucket["LifecycleConfiguration"]["Rules"]
    assert all(rule["Status"] == "Enabled" for rule in rules)
    assert any(rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays", 0) >= 1 for rule in rules)
    assert any(rule.get("ExpiredObjectDeleteMarker") is True for rule in rules)
    assert any("AbortIncompleteMultipartUpload" in rule for rule in rules)


def test_fallback_idempotency_records_expire_after_their_ttl(app: Synth) -> None:
    rules = _batch_bucket(app)["LifecycleConfiguration"]["Rules"]
    for runtime in (r for r in runtimes(app) if r.kind in ("s3", "worker")):
        folder = runtime.env["MAAS_OUTPUT_PREFIX"] + IDEMPOTENCY_DIR
        matching = [r for r in rules if r.get("Prefix") == folder and "ExpirationInDays" in r]
        assert matching, f"no lifecycle rule expires {folder}"
        assert IDEMPOTENCY_TTL_DAYS < matching[0]["ExpirationInDays"] <= IDEMPOTENCY_TTL_DAYS + 2


# --- 5. the GPU queue worker ----------------------------------------------------------------------


def test_queue_worker_gets_its_queue_and_the_lambda_batch_environment(
    app: Synth, all_runtimes: list[Runtime], models: dict[str, dict[str, Any]]
) -> None:
    for worker in (r for r in all_runtimes if r.kind == "worker"):
        resources = app.json(f"maas-{STAGE}-model-{worker.model}")["Resources"]
        queue_id = worker.env["MAAS_QUEUE_URL"]["Ref"]
        queue = resources[queue_id]
        assert queue["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" in queue["Properties"]
        rules = [r for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
        assert [t["Arn"] for r in rules for t in r["Properties"]["Targets"]] == [{"Fn::GetAtt": [queue_id, "Arn"]}]
        assert worker.env["MAAS_MODELS"] == f"/app/artifacts/{worker.model}"
        assert worker.env["MAAS_BATCH_BUCKET"] == BATCH_BUCKET
        assert worker.env["MAAS_INPUT_PREFIX"] == f"inputs/{worker.model}/"
        assert worker.env["MAAS_OUTPUT_PREFIX"] == f"outputs/{worker.model}/"
        assert int(worker.env["MAAS_BATCH_MEMORY_MB"]) > 0  # its input windows are budgeted from the task's memory
        consume = worker.actions_on({"Fn::GetAtt": [queue_id, "Arn"]})  # type: ignore[arg-type]
        assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= consume
        server = next(r for r in all_runtimes if r.model == worker.model and r.kind == "server")
        assert "MAAS_QUEUE_URL" not in server.env
        # each message's own deadline: the model's batch_timeout_s (docs/batch.md, "Queue worker")
        budget = _deploy(models, worker.model).get("batch_timeout_s", DEFAULT_BATCH_TIMEOUT_S)
        assert worker.env["MAAS_MESSAGE_BUDGET_S"] == str(budget)


def test_worker_command_and_lambda_handlers_exist_in_the_runtime() -> None:
    """Every entry point the template names (the contract's HANDLERS and WORKER_COMMAND) imports and is callable."""
    probe = (
        "import importlib, json, sys\n"
        "from functions.contract.deployment import HANDLERS, WORKER_COMMAND\n"
        "found = {}\n"
        "for kind, path in HANDLERS.items():\n"
        "    module, _, name = path.rpartition('.')\n"
        "    found[kind] = callable(getattr(importlib.import_module(module), name, None))\n"
        "found['worker'] = callable(getattr(importlib.import_module(WORKER_COMMAND[-1]), 'main', None))\n"
        "print(json.dumps(found))\n"
    )
    env = {"PATH": os.environ["PATH"], "MAAS_MODELS": "", "AWS_DEFAULT_REGION": REGION, "POWERTOOLS_LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"http": True, "s3": True, "sqs": True, "chunk": True,
                                                                   "worker": True}
