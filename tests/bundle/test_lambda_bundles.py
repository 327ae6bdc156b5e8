"""GIVEN the default stage synthesized strictly (x86_64: what this machine can run), each function's code asset
zipped and unzipped as `cdk deploy` ships it WHEN every handler of every Lambda model runs in a fresh CPython of
the template's runtime version — `-I -S`, only the bundle (plus boto3, as the managed runtime provides it) on
sys.path, the task root mounted read-only at /var/task, an unprivileged user, exactly the template's environment
(intrinsics resolved to the local AWS that moto serves) — over every event in events/ that targets it (a streaming
model's HTTP function as deployed: its server behind the Lambda Web Adapter's HTTP request)
THEN every response is right, and torch, transformers, onnx, model_build and the dev tools are never imported;
and the API's authorizer runs from its zip with nothing but boto3 beside it.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest

from maas_dev.bundle_process import BundleServer
from maas_dev.gateway import adapter
from maas_dev.gateway.local import TaskRoots
from maas_dev.gateway.stage import FunctionDef, stage_functions
from maas_dev.lambda_bundle import BundleRun, can_isolate, run_bundle
from maas_dev.local_aws import SAMPLE_JSONL, SAMPLE_KEY
from tests.bundle.conftest import REGION, REPO, STAGE, _lower
from tests.conftest import EVENTS_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not can_isolate(), reason="needs root and unshare to mount a read-only /var/task"),
]

NEVER_IMPORTED = {"torch", "transformers", "onnx", "onnxscript", "model_build", "maas_dev", "infra", "moto",
                  "uvicorn", "typer", "rich", "httpx", "pytest", "huggingface_hub"}  # fmt: skip
IMAGE_TASKS = {"image-classification"}


@dataclass(frozen=True)
class Function:
    model: str
    task: str
    kind: str  # http, s3, sqs
    definition: FunctionDef

    @property
    def handler(self) -> str:
        return self.definition.handler or "functions.handlers.http.handler"  # a web-adapter image serves the app


def model_functions(assembly: Path) -> list[Function]:
    """The dev stage's model functions, from a strictly synthesized cloud assembly."""
    from functions.contract.catalog import load_catalog

    catalog = load_catalog(REPO / "catalog.toml")
    functions = []
    for definition in stage_functions(assembly, STAGE):
        if not definition.stack.startswith(f"maas-{STAGE}-model-"):
            continue
        model = definition.stack.removeprefix(f"maas-{STAGE}-model-")
        kind = "http" if definition.web_adapter else str(definition.handler).split(".")[2]
        functions.append(Function(model, catalog[model].task, kind, definition))
    return functions


@pytest.fixture(scope="module")
def stage(synthesized_stage: Path) -> list[Function]:
    return model_functions(synthesized_stage)


def _client(service: str, aws: dict[str, str]) -> Any:
    """A client of the local AWS, for the test's own setup and checks."""
    keys = {k: aws[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    return boto3.client(service, region_name=REGION, endpoint_url=aws["AWS_ENDPOINT_URL"], **_lower(keys))


def _environment(function: Function, aws: dict[str, str]) -> dict[str, str]:
    """The template's variables as Lambda would set them; intrinsics (a table's Ref) resolved for the local AWS."""
    env = dict(function.definition.environment)
    if "MAAS_IDEMPOTENCY_TABLE" in env:
        dynamodb = _client("dynamodb", aws)
        if env["MAAS_IDEMPOTENCY_TABLE"] not in dynamodb.list_tables()["TableNames"]:
            dynamodb.create_table(
                TableName=env["MAAS_IDEMPOTENCY_TABLE"],
                BillingMode="PAY_PER_REQUEST",
                KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            )
    lambda_env = {
        "AWS_LAMBDA_FUNCTION_NAME": f"maas-{STAGE}-{function.model}-{function.kind}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.definition.memory_mb),
        "MAAS_PROBE_TIMEOUT_S": str(function.definition.timeout_s),
    }
    return {**env, **lambda_env, **{k: v for k, v in aws.items() if k != "BUCKET"}}


def _targets(event: dict[str, Any], function: Function) -> bool:
    """Whether ``event`` is one this function receives as deployed."""
    if event.get("source") == "aws.s3":  # EventBridge's Object Created: the small-object rule targets the S3 function
        return function.kind == "s3" and event["detail"]["object"]["key"].startswith(f"inputs/{function.model}/")
    if "step" in event or "BatchInput" in event or event.get("source") == "aws.states":  # the state machine's steps
        return function.kind == "chunk" and f"maas-dev-{function.model}-jobs" in json.dumps(event)
    records = event.get("Records")
    if records:
        source = records[0].get("eventSource")
        if source == "aws:s3":
            return function.kind == "s3" and records[0]["s3"]["object"]["key"].startswith(f"inputs/{function.model}/")
        return function.kind == "sqs" and any(f'"model": "{function.model}"' in r["body"] for r in records)
    if function.kind != "http":
        return False
    path = event.get("path") or event.get("rawPath") or ""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64

        body = base64.b64decode(body).decode()
    return (
        path.startswith("/v2/health") or f"/models/{function.model}/" in path or f'"model": "{function.model}"' in body
    )


def _adapt(event: dict[str, Any], function: Function, aws: dict[str, str]) -> dict[str, Any]:
    """A sample event as the deployment would deliver it: its bucket, its object's identity, its reply folder."""
    event = json.loads(json.dumps(event))
    records = event.get("Records") or []
    bucket = aws["BUCKET"]
    created = event if event.get("source") == "aws.s3" else event.get("event")
    if isinstance(created, dict) and created.get("source") == "aws.s3":  # Object Created, alone or in a plan step
        # the chunked route gets its own copy: the direct route's summary of the same version would end its plan
        key = SAMPLE_KEY if created is event else SAMPLE_KEY.replace(".jsonl", " (chunked).jsonl")
        put = _put_sample(aws, key)
        created["detail"]["bucket"]["name"] = bucket
        created["resources"] = [f"arn:aws:s3:::{bucket}"]
        created["detail"]["object"].update(
            key=quote_plus(key, safe="/"),
            size=len(SAMPLE_JSONL),
            etag=put["ETag"].strip('"'),
            **{"version-id": put["VersionId"]},
        )
    for record in records:
        if record.get("eventSource") == "aws:s3":
            put = _put_sample(aws)
            record["s3"]["bucket"]["name"] = bucket
            record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
            record["s3"]["object"].update(
                key=quote_plus(SAMPLE_KEY, safe="/"),
                size=len(SAMPLE_JSONL),
                eTag=put["ETag"].strip('"'),
                versionId=put["VersionId"],
            )
        elif record.get("eventSource") == "aws:sqs":
            record["body"] = record["body"].replace(
                "s3://maas-local/replies/", f"s3://{bucket}/outputs/{function.model}/replies/"
            )
    return event


_UPLOADED: dict[tuple[str, str], dict[str, Any]] = {}


def _put_sample(aws: dict[str, str], key: str = SAMPLE_KEY) -> dict[str, Any]:
    """Upload the object the sample events announce (maas_dev.local_aws.SAMPLE_JSONL) to the stage's bucket, once:
    every event that names it announces the same version (a second upload would make the first events stale)."""
    if (aws["AWS_ENDPOINT_URL"], key) not in _UPLOADED:
        _UPLOADED[aws["AWS_ENDPOINT_URL"], key] = _client("s3", aws).put_object(
            Bucket=aws["BUCKET"], Key=key, Body=SAMPLE_JSONL
        )
    return _UPLOADED[aws["AWS_ENDPOINT_URL"], key]


def _with_run(event: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """A chunk or merge step as the state machine builds it for the run the plan step returned."""
    event = json.loads(json.dumps(event))
    if "BatchInput" in event:
        event["BatchInput"]["run"] = run
        event["Items"][0].update(end=run["job"]["size"])
    elif event.get("step") == "merge":
        event["run"] = run
    return event


EVENTS = sorted(EVENTS_DIR.glob("*.json"))
EMULATED_SLOWDOWN = 60  # an arm64 function under QEMU user mode (maas_dev.emulation), for its deadlines


def _run(
    function: Function,
    events: list[dict[str, Any]],
    roots: TaskRoots,
    aws: dict[str, str],
    python: Path,
    runtime_dir: Path,
    emulator: tuple[str, ...] = (),
) -> BundleRun:
    """``function`` from its task root over ``events``; ``emulator``: QEMU for an arm64 Python (maas_dev.emulation)."""
    root = roots(function.definition)
    environment = _environment(function, aws)
    timeout_s = function.definition.timeout_s
    if emulator:  # deadlines are wall-clock and QEMU runs tens of times slower: the emulated function gets longer ones
        timeout_s *= EMULATED_SLOWDOWN
        environment.update(MAAS_REQUEST_TIMEOUT_S=str(timeout_s), MAAS_PROBE_TIMEOUT_S=str(timeout_s))
    if not function.definition.web_adapter:
        return run_bundle(
            root, python=python, handler=function.handler, environment=environment, events=events,
            runtime_dir=runtime_dir, emulator=emulator,
        )  # fmt: skip
    # The image's entry point is the server; the adapter's part is an HTTP request per event. What the app imports
    # is checked from the same task root through the handler module the server loads.
    imports = run_bundle(root, python=python, handler=function.handler, environment=environment, events=[],
                         runtime_dir=runtime_dir, emulator=emulator)  # fmt: skip
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert function.definition.entry_point is not None
    server = BundleServer(
        root, python=python, entry_point=list(function.definition.entry_point), port=port, runtime_dir=runtime_dir,
        environment=environment, ready_path=environment["AWS_LWA_READINESS_CHECK_PATH"], emulator=emulator,
    )  # fmt: skip
    results = []
    with server:
        server.start()
        for event in events:
            response = adapter.forward(
                port, event, deadline_s=adapter.lambda_deadline(timeout_s),
                function_arn="arn:aws:lambda:eu-west-1:123456789012:function:local", timeout_s=600 if emulator else 60,
            )  # fmt: skip
            body = b"".join(response.chunks()).decode()
            response.close()
            headers = {k.lower(): v for k, v in response.headers}
            results.append({"ok": True, "response": {"statusCode": response.status, "body": body, "headers": headers}})
    return BundleRun(
        init_s=imports.init_s, results=results, import_failures={}, modules=imports.modules,
        peak_rss_mb=imports.peak_rss_mb, process_s=imports.process_s, first_response_s=None, stderr="",
    )  # fmt: skip


def _authorizer_event(path: Path) -> bool:
    return json.loads(path.read_text()).get("type") == "REQUEST"


def test_every_handler_of_every_lambda_model_serves_its_events_from_the_built_bundle(
    stage: list[Function],
    task_roots: TaskRoots,
    aws: dict[str, str],
    lambda_python: Path,
    runtime_dir: Path,
) -> None:
    functions = stage
    assert {f.model for f in functions} == {"minilm-embed", "intent-classifier", "smollm2-chat", "efficientnet-lite0"}
    assert sorted(f.kind for f in functions) == sorted(["http", "s3", "sqs", "chunk"] * 4)
    served: dict[str, list[str]] = {}
    for function in functions:
        events = [(path.name, json.loads(path.read_text())) for path in EVENTS if not _authorizer_event(path)]
        mine = [(name, _adapt(event, function, aws)) for name, event in events if _targets(event, function)]
        runs = []
        if function.kind == "chunk" and mine:  # the plan first: the later steps carry the run it returns
            plans = [(name, event) for name, event in mine if event.get("step") == "plan"]
            runs.append((plans, _run(function, [e for _, e in plans], task_roots, aws, lambda_python, runtime_dir)))
            run_ref = runs[0][1].results[0]["response"]["run"]
            later = [(name, _with_run(event, run_ref)) for name, event in mine if event.get("step") != "plan"]
            runs.append((later, _run(function, [e for _, e in later], task_roots, aws, lambda_python, runtime_dir)))
        else:
            runs.append(
                (mine, _run(function, [event for _, event in mine], task_roots, aws, lambda_python, runtime_dir))
            )
        where = f"{function.model} {function.kind}"
        for given, run in runs:
            assert not run.modules & NEVER_IMPORTED, (where, run.modules & NEVER_IMPORTED)
            assert ("PIL" in run.modules) == (function.task in IMAGE_TASKS), where  # text zips carry no Pillow
            assert ("boto3" in run.modules) == (function.kind != "http"), where  # ~1 s of init HTTP never pays
            for (name, _), result in zip(given, run.results, strict=True):
                _check(name, function, result, aws)
        served[where] = [name for name, _ in mine]
    # every event in events/ was delivered to at least one function, and every HTTP function got one
    served_events = {name for names in served.values() for name in names}
    assert served_events == {path.name for path in EVENTS if not _authorizer_event(path)}
    assert all(served[f"{m} http"] for m in ("minilm-embed", "intent-classifier", "smollm2-chat", "efficientnet-lite0"))


def _check(name: str, function: Function, result: dict[str, Any], aws: dict[str, str]) -> None:
    where = f"{name} → {function.model} {function.kind}"
    if function.kind == "sqs":
        assert result["ok"], (where, result)
        failed = {f["itemIdentifier"] for f in result["response"]["batchItemFailures"]}
        records = json.loads((EVENTS_DIR / name).read_text())["Records"]
        good_id = {"minilm-embed": "req-embed-1", "intent-classifier": "req-intent-1"}[function.model]
        good = {r["messageId"] for r in records if f'"id": "{good_id}"' in r["body"]}
        assert good and not good & failed and failed == {r["messageId"] for r in records} - good, where
        s3 = _client("s3", aws)
        replies = s3.list_objects_v2(Bucket=aws["BUCKET"], Prefix=f"outputs/{function.model}/replies/")
        assert replies.get("KeyCount", 0) >= 1, where
        return
    if function.kind == "s3":
        assert result["ok"], (where, result)
        (job,) = result["response"]["jobs"]
        assert job["status"] == "completed" and job["counts"] == {"total": 3, "succeeded": 2, "failed": 1}, where
        return
    if function.kind == "chunk":  # plan, the Map's batch, merge, then a failure notice for a job that completed
        assert result["ok"], (where, result)
        response = result["response"]
        if name.endswith("_plan.json"):
            assert response["route"] == "chunks" and response["chunks"] == 1, where
        elif name.endswith("_chunk.json"):
            (chunk,) = response["chunks"]
            assert chunk["counts"] == {"total": 3, "succeeded": 2, "failed": 1} and not chunk["skipped"], where
        elif name.endswith("_merge.json"):
            assert response["status"] == "completed" and response["counts"]["total"] == 3, where
        else:
            assert response == {"status": "ignored"}, where  # the job completed: a late failure notice changes nothing
        return
    assert result["ok"], (where, result)
    response = result["response"]
    body = response["body"]
    expected = 422 if "bad_field" in name else 200
    assert response["statusCode"] == expected, (where, body[:500])
    if name.startswith("function_url_health"):
        assert json.loads(body)["ready"] is True, where
    elif "chat_completions_stream" in name:
        assert "data: [DONE]" in body and '"chat.completion.chunk"' in body, where
    elif "image" in name:
        labels = [o["label"] for o in json.loads(body)["outputs"][0]]
        assert "espresso" in labels, (where, labels)
    elif "embed" in name and expected == 200:
        payload = json.loads(body)
        vectors = payload["outputs"] if "outputs" in payload else [d["embedding"] for d in payload["data"]]
        assert all(len(v) == 384 for v in vectors) or all(isinstance(v, str) for v in vectors), where


def test_the_task_root_stays_untouched_and_every_module_loads_from_bytecode(
    stage: list[Function],
    task_roots: TaskRoots,
    aws: dict[str, str],
    lambda_python: Path,
    runtime_dir: Path,
) -> None:
    """Nothing is compiled at a cold start: every module of the bundle (the runtime's own too) has its bytecode."""
    http = next(f for f in stage if f.model == "minilm-embed" and f.kind == "http")
    root = task_roots(http.definition)
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    run = run_bundle(
        root,
        python=lambda_python,
        handler=http.handler,
        environment=_environment(http, aws),
        events=[json.loads((EVENTS_DIR / "apigw_v1_predict_embed.json").read_text())],
        runtime_dir=runtime_dir,
        verbose_imports=True,
    )
    assert run.results[0]["response"]["statusCode"] == 200
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    sources = re.findall(r"^# code object from '?(/var/task/[^'\n]+\.py)'?$", run.stderr, flags=re.MULTILINE)
    assert sources == [], sources[:10]  # every import came from a .pyc
    matched = re.findall(r"^# code object from '?(/var/task/[^'\n]+\.pyc)'?$", run.stderr, flags=re.MULTILINE)
    assert any("/var/task/functions/" in path for path in matched)


def test_the_authorizer_runs_from_its_zip_with_boto3_alone(
    synthesized_stage: Path, task_roots: TaskRoots, aws: dict[str, str], lambda_python: Path, runtime_dir: Path
) -> None:
    """GIVEN the stage's key table (moto) holding the sample event's key WHEN the authorizer's zip runs as Lambda runs
    it THEN it allows the key with the tenant's usage-plan key, refuses others in the path's protocol shape and asks
    API Gateway for a 401 without one — importing nothing but the standard library, boto3 and its own modules."""
    from functions.contract.deployment import AUTHORIZER_HANDLER
    from functions.web import api_keys as keys

    (definition,) = [f for f in stage_functions(synthesized_stage, STAGE) if f.handler == AUTHORIZER_HANDLER]
    root = task_roots(definition)
    shipped = sorted(str(p.relative_to(root)) for p in root.rglob("*.py"))
    assert shipped == sorted(f"functions/{module}" for module in ("__init__.py", "handlers/__init__.py",
                             "handlers/authorizer.py", "web/__init__.py", "web/api_keys.py"))  # fmt: skip
    event = json.loads((EVENTS_DIR / "apigw_authorizer_request.json").read_text())
    key = event["headers"]["Authorization"].removeprefix("Bearer ")
    dynamodb = _client("dynamodb", aws)
    table = definition.environment["MAAS_API_KEYS_TABLE"]
    if table not in dynamodb.list_tables()["TableNames"]:  # (moto's state is per process: another test may have it)
        dynamodb.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "key_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "key_id", "AttributeType": "S"}],
        )  # fmt: skip
    item = {"key_id": keys.key_id_of(key), "key_hash": keys.key_hash(key), "tenant": "demo", "usage_key": "u" * 40,
            "status": keys.ACTIVE}  # fmt: skip
    dynamodb.put_item(TableName=table, Item={name: {"S": value} for name, value in item.items()})
    wrong = {**event, "headers": {"Authorization": "Bearer " + keys.new_key().key}}
    missing = {**event, "headers": {}}
    environment = {**definition.environment, **{k: v for k, v in aws.items() if k != "BUCKET"}}
    run = run_bundle(root, python=lambda_python, handler=AUTHORIZER_HANDLER, environment=environment,
                     events=[event, wrong, missing], runtime_dir=runtime_dir)  # fmt: skip
    allowed, refused, absent = run.results
    assert allowed["ok"] and allowed["response"]["usageIdentifierKey"] == "u" * 40, allowed
    assert allowed["response"]["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert refused["ok"] and refused["response"]["context"]["code"] == "invalid_api_key"
    assert json.loads(refused["response"]["context"]["errorBody"])["error"]["type"] == "invalid_request_error"  # /v1
    assert absent == {**absent, "ok": False, "error": "Unauthorized", "message": "Unauthorized"}
    assert not run.modules & {"pydantic", "pydantic_core", "numpy", "fastapi", "starlette", "onnxruntime",
                              "aws_lambda_powertools", *NEVER_IMPORTED}, run.modules  # fmt: skip
    assert {"functions", "boto3"} <= run.modules


def test_the_bundle_holds_the_runtime_and_no_dev_tool_and_every_runtime_module_imports_from_it(
    stage: list[Function],
    task_roots: TaskRoots,
    aws: dict[str, str],
    lambda_python: Path,
    runtime_dir: Path,
) -> None:
    """GIVEN the image model's zip (the one bundle that carries every dependency set, Pillow included) THEN its
    file list holds the runtime and its dependencies but no dev tool, build or infra code, and every module of
    `functions` imports from it: one importing moto, uvicorn, typer or rich would fail there, for they are not in it."""
    image = next(f for f in stage if f.task in IMAGE_TASKS and f.kind == "http" and f.definition.image_target is None)
    root = task_roots(image.definition)
    top = {path.name for path in root.iterdir()}
    assert {"functions", "artifacts", "onnxruntime", "numpy", "tokenizers", "PIL"} <= top
    assert not top & {"maas_dev", "model_build", "infra", "tests", "moto", "uvicorn", "typer", "rich", "torch"}
    files = [str(p.relative_to(root)) for p in (root / "functions").rglob("*.py")]
    assert not [f for f in files if f.rsplit("/", 1)[-1] in ("server.py", "local_aws.py", "cli.py")]
    run = run_bundle(root, python=lambda_python, handler=image.handler, environment=_environment(image, aws),
                     events=[], runtime_dir=runtime_dir, import_all="functions")  # fmt: skip
    assert run.import_failures == {}
    assert len(files) > 60 and not run.modules & NEVER_IMPORTED
