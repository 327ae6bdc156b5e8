"""The S3 handler on real-shaped notifications (moto in-process): nothing lost, nothing written twice."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.batch.exceptions import StorageError
from functions.batch.s3io import clear_clients, s3_client
from functions.contract import Limits, Task
from functions.inference.image_config import ImagePreprocessing
from functions.inference.pipelines.base import Capability, Prepared, TaskParameters, TaskResult
from functions.settings import get_settings
from maas_dev.local_aws import SAMPLE_JSONL, SAMPLE_KEY, local_context, s3_put_event
from tests.conftest import EVENTS_DIR

BUCKET = "maas-batch"
MODEL = "minilm-embed"


@pytest.fixture
def s3(monkeypatch) -> Any:
    monkeypatch.setenv("MAAS_BATCH_BUCKET", BUCKET)
    for name in ("MAAS_IDEMPOTENCY_TABLE", "MAAS_EXPECTED_BUCKET_OWNER", "MAAS_INPUT_PREFIX", "MAAS_OUTPUT_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client
    clear_clients()
    get_settings.cache_clear()


@pytest.fixture
def handler(monkeypatch, registry):
    import functions.handlers.s3 as module

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    return module.handler


def upload(s3: Any, key: str, body: bytes, bucket: str = BUCKET) -> dict[str, Any]:
    """Put an object and return the notification S3 would send for it."""
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    head = s3.head_object(Bucket=bucket, Key=key)
    return s3_put_event(bucket, key, etag=head["ETag"], size=head["ContentLength"], version_id=head.get("VersionId"))


def read_jsonl(s3: Any, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().splitlines()]


def read_json(s3: Any, key: str) -> dict[str, Any]:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def bucket_state(s3: Any) -> dict[str, tuple[str, str]]:
    """Every object version in the bucket: (key, version) → etag; any write changes it."""
    versions = s3.list_object_versions(Bucket=BUCKET).get("Versions", [])
    return {(v["Key"], v["VersionId"]): v["ETag"] for v in versions}


def count_predicts(monkeypatch, pipeline) -> list[int]:
    """The size of every model run (every path runs the model through ``execute``)."""
    calls: list[int] = []
    original = pipeline.execute

    def spy(features, parameters):
        calls.append(len(features))
        return original(features, parameters)

    monkeypatch.setattr(pipeline, "execute", spy)
    return calls


MALFORMED = [  # (line text, the words its error line must contain)
    (lambda i: f'{{"id": {i}, "inputs": "unterminated', "not valid JSON"),
    (lambda i: f'{{"id": {i}, "text": "wrong field"}}', "no 'inputs'"),
    (lambda i: '{"inputs": "no id here"}', "needs an 'id'"),
    (lambda i: f'{{"id": {i}, "inputs": 12345}}', "must be a string"),
    (lambda i: json.dumps({"id": i, "inputs": "x" * 20_001}), "at most 20000"),
]


def test_ten_thousand_lines_with_37_malformed(s3, handler, registry, monkeypatch):
    # GIVEN a versioned bucket and a 10,000-line JSONL input with 37 malformed lines of five kinds
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    rng = random.Random(3)
    bad = dict(zip(sorted(rng.sample(range(10_000), 37)), (MALFORMED * 8)[:37], strict=True))
    lines = [bad[i][0](i) if i in bad else json.dumps({"id": i, "inputs": f"short sentence {i}"})
             for i in range(10_000)]
    event = upload(s3, f"inputs/{MODEL}/big.jsonl", ("\n".join(lines) + "\n").encode())
    predicts = count_predicts(monkeypatch, registry.get(MODEL))

    # WHEN the object-created event is handled
    started = time.perf_counter()
    response = handler(event, local_context())
    seconds = time.perf_counter() - started

    # THEN there is one output line per input line, in input order, 37 of them error lines
    out = read_jsonl(s3, f"outputs/{MODEL}/big.jsonl")
    assert len(out) == 10_000
    errors = {n: line for n, line in enumerate(out) if "error" in line}
    assert sorted(errors) == sorted(bad)
    for n, line in enumerate(out):
        if n in errors:
            assert line["line"] == n + 1 and bad[n][1] in line["error"]["message"], line
        else:
            assert line["id"] == n and len(line["output"]) == 384
    # AND the summary's counts match, with the input's identity and the model version
    summary = read_json(s3, f"outputs/{MODEL}/big.jsonl.summary.json")
    assert summary["counts"] == {"total": 10_000, "succeeded": 9_963, "failed": 37}
    assert response["jobs"][0]["counts"] == summary["counts"]
    assert summary["input"]["version_id"] == event["Records"][0]["s3"]["object"]["versionId"]
    assert summary["input"]["etag"] == event["Records"][0]["s3"]["object"]["eTag"]
    assert summary["model_version"] == registry.get(MODEL).manifest.version
    # max_batch-sized chunks; an input the model refuses costs one rerun of its chunk
    refused_by_model = sum(1 for text, _ in bad.values() if text in (MALFORMED[3][0], MALFORMED[4][0]))
    assert max(predicts) <= 32 and len(predicts) <= -(-9_977 // 32) + 1 + refused_by_model
    print(f"\n10,000 lines: {seconds:.1f}s, {len(predicts)} predict calls, {summary['duration_s']}s in job")

    # WHEN the same event is delivered again THEN nothing new is written and nothing recomputed
    before, calls = bucket_state(s3), len(predicts)
    again = handler(event, local_context())
    assert bucket_state(s3) == before and len(predicts) == calls
    assert again["jobs"][0]["counts"] == summary["counts"]


def test_redelivery_is_deduped_even_after_the_idempotency_record_expired(s3, handler, registry, monkeypatch):
    event = upload(s3, f"inputs/{MODEL}/small.jsonl", b'{"id": "a", "inputs": "hello"}\n')
    handler(event, local_context())
    outputs = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outputs/{MODEL}/")["Contents"]}
    # GIVEN the dedupe record is gone (TTL) WHEN the event comes again THEN the summary still stops the rerun
    for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/.idempotency/")["Contents"]:
        s3.delete_object(Bucket=BUCKET, Key=obj["Key"])
    predicts = count_predicts(monkeypatch, registry.get(MODEL))
    handler(event, local_context())
    after = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outputs/{MODEL}/")["Contents"]}
    assert after == outputs and predicts == []


def test_events_the_function_must_not_act_on_are_logged_and_ignored(s3, handler, caplog):
    # GIVEN notifications for an output key (a misconfigured trigger), another bucket, a folder and a delete
    out_event = upload(s3, f"outputs/{MODEL}/x.jsonl", b'{"id": 1, "inputs": "a"}\n')
    s3.create_bucket(Bucket="elsewhere")
    other_bucket = upload(s3, f"inputs/{MODEL}/x.jsonl", b'{"id": 1, "inputs": "a"}\n', bucket="elsewhere")
    folder = s3_put_event(BUCKET, f"inputs/{MODEL}/", etag="d41d8cd98f00b204e9800998ecf8427e", size=0)
    removed = json.loads(json.dumps(out_event))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    before = bucket_state(s3)
    for event in (out_event, other_bucket, folder, removed):
        # WHEN each is handled THEN no job runs, nothing is written, and a log line says why
        assert handler(event, local_context()) == {"jobs": []}
    assert bucket_state(s3) == before
    reasons = [r.reason for r in caplog.records if r.getMessage() == "ignoring S3 event"]
    assert len(reasons) == 4
    assert "outside the input prefix" in reasons[0] and "not the batch bucket" in reasons[1]
    assert "key must look like" in reasons[2] and "not an object creation" in reasons[3]


def test_csv_input_gives_jsonl_output_with_row_ids(s3, handler):
    body = b'id,text\nr1,"I want to check my balance"\nr2,book a flight to Paris\nr3,"broken\n,no id given\n'
    handler(upload(s3, "inputs/intent-classifier/rows.csv", body), local_context())
    out = read_jsonl(s3, "outputs/intent-classifier/rows.csv.jsonl")
    assert [line["id"] for line in out] == ["r1", "r2", 3, 4]  # no id column value: the row number
    assert out[0]["output"][0]["label"] and "not a valid CSV row" in out[2]["error"]["message"]
    assert read_json(s3, "outputs/intent-classifier/rows.csv.summary.json")["counts"]["failed"] == 1


def test_unsupported_type_and_unknown_model_are_rejected_in_the_summary(s3, handler):
    handler(upload(s3, f"inputs/{MODEL}/notes.txt", b"hello"), local_context())
    summary = read_json(s3, f"outputs/{MODEL}/notes.txt.summary.json")
    assert summary["status"] == "rejected" and ".jsonl" in summary["error"]["message"] and summary["output"] is None
    handler(upload(s3, "inputs/no-such-model/a.jsonl", b'{"id": 1, "inputs": "a"}\n'), local_context())
    summary = read_json(s3, "outputs/no-such-model/a.jsonl.summary.json")
    assert summary["error"]["code"] == "model_not_found"
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/no-such-model/a.jsonl.j")


def test_an_older_event_never_overwrites_a_newer_result(s3, handler):
    # GIVEN a versioned object written twice, and the event of the first version arriving late
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    key = f"inputs/{MODEL}/doc.jsonl"
    old = upload(s3, key, b'{"id": "v1", "inputs": "old"}\n')
    new = upload(s3, key, b'{"id": "v2", "inputs": "new"}\n')
    handler(new, local_context())
    assert read_jsonl(s3, f"outputs/{MODEL}/doc.jsonl")[0]["id"] == "v2"
    # WHEN the stale event is handled THEN the newer result stays
    assert handler(old, local_context())["jobs"][0]["status"] == "superseded"
    assert read_jsonl(s3, f"outputs/{MODEL}/doc.jsonl")[0]["id"] == "v2"


def test_event_for_a_replaced_unversioned_object_writes_nothing(s3, handler):
    key = f"inputs/{MODEL}/doc.jsonl"
    stale = upload(s3, key, b'{"id": "v1", "inputs": "old"}\n')
    s3.put_object(Bucket=BUCKET, Key=key, Body=b'{"id": "v2", "inputs": "new"}\n')  # its event is yet to come
    assert handler(stale, local_context())["jobs"][0]["status"] == "superseded"
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outputs/{MODEL}/")


def fail_on(client: Any, operation: str, key_part: str) -> None:
    def boom(params: dict[str, Any], **_: Any) -> None:
        if key_part in params.get("Key", ""):
            raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)

    client.meta.events.register(f"provide-client-params.s3.{operation}", boom)


def test_a_failed_output_write_fails_the_invocation_and_leaves_nothing_partial(s3, handler):
    # GIVEN S3 refuses the output write
    fail_on(s3_client(""), "PutObject", f"outputs/{MODEL}/job.jsonl")
    event = upload(s3, f"inputs/{MODEL}/job.jsonl", b'{"id": 1, "inputs": "a"}\n{"id": 2, "inputs": "b"}\n')
    # WHEN the event is handled THEN the invocation raises (Lambda retries it, then its DLQ)
    with pytest.raises(StorageError, match="InternalError"):
        handler(event, local_context())
    # AND no output, summary or claimed dedupe record remains to block the retry
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/")
    # WHEN the retry comes after S3 recovered THEN the job completes
    clear_clients()
    assert handler(event, local_context())["jobs"][0]["counts"]["succeeded"] == 2


def test_expected_bucket_owner_is_sent_on_every_s3_call(s3, handler, monkeypatch):
    monkeypatch.setenv("MAAS_EXPECTED_BUCKET_OWNER", "123456789012")
    get_settings.cache_clear()
    seen: list[tuple[str, str | None]] = []
    s3_client("123456789012").meta.events.register(
        "before-call.s3", lambda model, params, **_: seen.append(
            (model.name, params["headers"].get("x-amz-expected-bucket-owner"))))
    handler(upload(s3, f"inputs/{MODEL}/owned.jsonl", b'{"id": 1, "inputs": "a"}\n'), local_context())
    assert len(seen) >= 5 and all(owner == "123456789012" for _, owner in seen), seen


def test_dynamodb_idempotency_table_when_configured(s3, handler, monkeypatch):
    monkeypatch.setenv("MAAS_IDEMPOTENCY_TABLE", "maas-idempotency")
    get_settings.cache_clear()
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(TableName="maas-idempotency", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                          BillingMode="PAY_PER_REQUEST")
    event = upload(s3, f"inputs/{MODEL}/ddb.jsonl", b'{"id": 1, "inputs": "a"}\n')
    handler(event, local_context())
    handler(event, local_context())
    (item,) = dynamodb.scan(TableName="maas-idempotency")["Items"]
    assert item["status"]["S"] == "COMPLETED" and item["id"]["S"].startswith("maas-s3-job#")
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/.idempotency/")


def test_the_sample_event_replays_against_its_documented_object(s3, handler, monkeypatch):
    # GIVEN events/s3_put.json and the object it announces (docs/batch.md)
    monkeypatch.setenv("MAAS_BATCH_BUCKET", "maas-local")
    get_settings.cache_clear()
    s3.create_bucket(Bucket="maas-local")
    s3.put_object(Bucket="maas-local", Key=SAMPLE_KEY, Body=SAMPLE_JSONL)
    event = json.loads((EVENTS_DIR / "s3_put.json").read_text())
    # WHEN the handler runs it THEN each sample line has its result line
    response = handler(event, local_context())
    assert response["jobs"][0]["counts"] == {"total": 3, "succeeded": 2, "failed": 1}


class FakeImagePipeline:
    """Stands in for an image model: returns each image's byte length."""

    name = "fake-image"
    task = Task.IMAGE_CLASSIFICATION
    limits = Limits(max_batch=4)

    class manifest:  # mimics Pipeline.manifest
        version = "0000000000000000"

    preprocessing = ImagePreprocessing(max_image_bytes=4096)  # the model's own per-image limit

    def has(self, capability: Any) -> bool:
        return capability is Capability.IMAGE_INPUT

    def prepare(self, inputs: list[Any], parameters: Any = None) -> Prepared[TaskParameters]:
        return Prepared(list(inputs), TaskParameters())

    def execute(self, features: list[bytes], parameters: Any) -> list[int]:
        return [len(x) for x in features]

    def finish(self, outputs: list[int], prepared: Any) -> TaskResult:
        return TaskResult([[{"label": "bytes", "score": float(n)}] for n in outputs])


def test_image_objects_and_image_manifests(s3, handler, registry, monkeypatch):
    from functions.inference.registry import ModelRegistry

    images = ModelRegistry()
    images.add(FakeImagePipeline())  # type: ignore[arg-type]
    import functions.handlers.s3 as module

    monkeypatch.setattr(module, "get_registry", lambda: images)
    # GIVEN an image object THEN it gets a one-line result
    handler(upload(s3, "inputs/fake-image/photos/cat.png", b"\x89PNG" + b"0" * 96), local_context())
    (line,) = read_jsonl(s3, "outputs/fake-image/photos/cat.png.jsonl")
    assert line == {"id": "photos/cat.png", "output": [{"label": "bytes", "score": 100.0}]}
    # GIVEN a manifest of image keys THEN each line's image is fetched, and bad references fail alone
    manifest = b"\n".join(json.dumps(x).encode() for x in [
        {"id": "a", "image": "cat.png"},
        {"id": "b", "image": "inputs/fake-image/photos/cat.png"},
        {"id": "c", "image": "missing.png"},
        {"id": "d", "image": "../../../outputs/secret"},
    ])
    handler(upload(s3, "inputs/fake-image/photos/batch.jsonl", manifest), local_context())
    out = read_jsonl(s3, "outputs/fake-image/photos/batch.jsonl")
    assert [line.get("output", [{}])[0].get("score") for line in out] == [100.0, 100.0, None, None]
    assert "does not exist" in out[2]["error"]["message"] and "must be under" in out[3]["error"]["message"]


def test_sample_events_are_real_shaped():
    event = json.loads(Path(EVENTS_DIR / "s3_put.json").read_text())
    record = event["Records"][0]
    assert record["eventSource"] == "aws:s3" and record["eventName"].startswith("ObjectCreated:")
    assert {"bucket", "object", "s3SchemaVersion", "configurationId"} <= set(record["s3"])


def test_per_model_prefixes_as_infra_deploys_them(s3, handler, monkeypatch):
    # GIVEN the function's own folders, inputs/<model>/ → outputs/<model>/ (one prefix pair per function)
    monkeypatch.setenv("MAAS_INPUT_PREFIX", f"inputs/{MODEL}/")
    monkeypatch.setenv("MAAS_OUTPUT_PREFIX", f"outputs/{MODEL}/")
    get_settings.cache_clear()
    # WHEN objects arrive directly in, and below, the model's folder THEN outputs mirror their paths
    handler(upload(s3, f"inputs/{MODEL}/a.jsonl", b'{"id": 1, "inputs": "a"}\n'), local_context())
    handler(upload(s3, f"inputs/{MODEL}/team/b.csv", b"text\nhello\n"), local_context())
    assert read_jsonl(s3, f"outputs/{MODEL}/a.jsonl")[0]["id"] == 1
    assert read_jsonl(s3, f"outputs/{MODEL}/team/b.csv.jsonl")[0]["id"] == 1
    assert read_json(s3, f"outputs/{MODEL}/team/b.csv.summary.json")["counts"]["succeeded"] == 1
    # AND records of the idempotency store stay under the function's output prefix
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"outputs/{MODEL}/.idempotency/")["KeyCount"] == 2


def test_manifest_images_are_limited_by_the_model_and_held_a_budget_at_a_time(s3, handler, monkeypatch):
    from functions.batch.s3_jobs import S3JobRunner
    from functions.inference.registry import ModelRegistry

    images = ModelRegistry()
    images.add(FakeImagePipeline())  # type: ignore[arg-type]
    import functions.handlers.s3 as module

    monkeypatch.setattr(module, "get_registry", lambda: images)
    monkeypatch.setenv("MAAS_BATCH_MEMORY_MB", "1")  # a quarter: 262,144 bytes of input at once
    monkeypatch.setenv("MAAS_MAX_IMAGE_BYTES", str(20 * 1024 * 1024))  # no longer a second, larger limit
    get_settings.cache_clear()
    held: list[int] = []
    flush = S3JobRunner._flush

    def spy(self: Any, pipeline: Any, job: Any, window: list[Any], *rest: Any) -> None:
        held.append(sum(record.size for record in window))
        flush(self, pipeline, job, window, *rest)

    monkeypatch.setattr(S3JobRunner, "_flush", spy)
    s3.put_object(Bucket=BUCKET, Key="inputs/fake-image/ok.png", Body=b"\x89PNG" + b"0" * 3996)  # 4,000 bytes
    s3.put_object(Bucket=BUCKET, Key="inputs/fake-image/big.png", Body=b"\x89PNG" + b"0" * 4093)  # 4,097 bytes
    # GIVEN a manifest of 400 lines naming an accepted image, and lines naming one just over the model's limit
    lines = [{"id": n, "image": "big.png" if n % 100 == 7 else "ok.png"} for n in range(400)]
    handler(upload(s3, "inputs/fake-image/many.jsonl", b"\n".join(json.dumps(x).encode() for x in lines)),
            local_context())  # fmt: skip
    out = read_jsonl(s3, "outputs/fake-image/many.jsonl")
    # THEN every line has its outcome, in order; the large image is refused by the model's own 4,096-byte limit
    assert [line["id"] for line in out] == list(range(400))
    refused = [line for line in out if "error" in line]
    assert [line["id"] for line in refused] == [7, 107, 207, 307]
    assert all("4,097 bytes; fake-image accepts at most 4,096" in line["error"]["message"] for line in refused)
    # AND no window held more than a quarter of the function's memory in image bytes
    assert len(held) > 1 and max(held) <= 1024 * 1024 // 4, held


def test_image_lines_for_a_text_model_are_refused_without_fetching(s3, handler):
    s3.put_object(Bucket=BUCKET, Key=f"inputs/{MODEL}/cat.png", Body=b"\x89PNG" + b"0" * 100)
    handler(upload(s3, f"inputs/{MODEL}/m.jsonl", b'{"id": 1, "image": "cat.png"}\n{"id": 2, "inputs": "hi"}\n'),
            local_context())  # fmt: skip
    first, second = read_jsonl(s3, f"outputs/{MODEL}/m.jsonl")
    assert "not an image model" in first["error"]["message"] and "output" in second
