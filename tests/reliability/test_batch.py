"""The event paths under at-least-once, unordered delivery and S3 faults: nothing lost, nothing doubled.

moto does not run Lambda's event source mappings, so the tests play their part: an SQS queue with a redrive
policy is received from, each batch handed to the handler (twice, shuffled: duplicates and disorder), the
messages it did not report failed are deleted, the others come back until ``maxReceiveCount`` sends them to
the DLQ. For S3, each notification is invoked as Lambda's async invoke does: up to 3 attempts, then the
on-failure destination. Faults are injected below botocore's retry loop (``before-send``), so its own
retries are exercised as in production.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import boto3
import botocore.endpoint
import pytest
from moto import mock_aws
from moto.core.botocore_stubber import MockRawResponse

from functions.batch.s3io import clear_clients, s3_client
from functions.settings import get_settings
from maas_dev.local_aws import local_context, s3_put_event

EMBED = "minilm-embed"
BATCH, RESULTS = "maas-batch", "maas-results"
REPLIES = f"s3://{RESULTS}/replies/"
MAX_RECEIVES = 3


@pytest.fixture
def aws(monkeypatch) -> Iterator[SimpleNamespace]:
    monkeypatch.setenv("MAAS_BATCH_BUCKET", BATCH)
    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", REPLIES)
    for name in ("MAAS_IDEMPOTENCY_TABLE", "MAAS_EXPECTED_BUCKET_OWNER", "MAAS_INPUT_PREFIX", "MAAS_OUTPUT_PREFIX",
                 "MAAS_MAX_OBJECT_BYTES"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    slept: list[float] = []  # botocore's retry back-off, recorded instead of slept
    monkeypatch.setattr(botocore.endpoint, "time", SimpleNamespace(sleep=slept.append))
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        for bucket in (BATCH, RESULTS):
            s3.create_bucket(Bucket=bucket)
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        dlq = sqs.create_queue(QueueName="maas-requests-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)})
        queue = sqs.create_queue(
            QueueName="maas-requests", Attributes={"VisibilityTimeout": "0", "RedrivePolicy": redrive}
        )["QueueUrl"]
        yield SimpleNamespace(s3=s3, sqs=sqs, queue=queue, dlq=dlq, slept=slept, client=s3_client(""))
    clear_clients()
    get_settings.cache_clear()


@pytest.fixture
def predicted(monkeypatch, registry) -> Counter[str]:
    """Every text the models ran inference on, counted (a prepared item always runs, or fails alone)."""
    seen: Counter[str] = Counter()
    for name in (EMBED, "intent-classifier"):
        pipeline = registry.get(name)

        def spy(inputs: list[Any], parameters: Any = None, original: Callable[..., Any] = pipeline.prepare) -> Any:
            seen.update(str(i) for i in inputs)
            return original(inputs, parameters)

        monkeypatch.setattr(pipeline, "prepare", spy)
    return seen


def inject(client: Any, operation: str, fault: Callable[[str], tuple[int, str] | None]) -> Counter[str]:
    """Answer ``operation`` with an S3 error when ``fault(url)`` says so; returns the injected faults by code."""
    injected: Counter[str] = Counter()

    def before_send(request: Any, **_: Any) -> Any:
        verdict = fault(request.url)
        if verdict is None:
            return None
        status, code = verdict
        injected[code] += 1
        # every before-send handler runs and the first response wins: moto (registered after us) still sees the
        # request, so point it at a bucket that does not exist — the injected fault then has no side effect
        request.url = request.url.replace("://", "://fault-injected-nowhere.", 1)
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        from botocore.awsrequest import AWSResponse

        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, MockRawResponse(body))

    client.meta.events.register_first(f"before-send.s3.{operation}", before_send)
    return injected


# --- SQS ---------------------------------------------------------------------------------------------------
def lambda_event(messages: list[dict[str, Any]], arn: str) -> dict[str, Any]:
    return {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": {k: m["Attributes"][k] for k in ("ApproximateReceiveCount", "SentTimestamp")},
        "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs", "eventSourceARN": arn,
        "awsRegion": "us-east-1",
    } for m in messages]}  # fmt: skip


def drive_sqs(aws: SimpleNamespace, handler: Any, *, duplicates: bool, seed: int = 7) -> dict[str, int]:
    """Play the event source mapping until the queue is empty; every batch is delivered twice when asked."""
    rng = random.Random(seed)
    arn = aws.sqs.get_queue_attributes(QueueUrl=aws.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    stats: Counter[str] = Counter()
    for _ in range(200):
        messages = aws.sqs.receive_message(QueueUrl=aws.queue, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
            "Messages", []
        )
        if not messages:
            break
        rng.shuffle(messages)  # out of order
        event = lambda_event(messages, arn)
        succeeded: set[str] = set()
        for _delivery in range(2 if duplicates else 1):
            stats["invocations"] += 1
            try:
                failed = {f["itemIdentifier"] for f in handler(event, local_context())["batchItemFailures"]}
            except Exception:  # an all-failed batch raises: Lambda retries every message of it
                failed = {m["MessageId"] for m in messages}
            succeeded |= {m["MessageId"] for m in messages} - failed
            rng.shuffle(event["Records"])
        for m in messages:
            stats["deliveries"] += 1 + duplicates
            if m["MessageId"] in succeeded:
                aws.sqs.delete_message(QueueUrl=aws.queue, ReceiptHandle=m["ReceiptHandle"])
    dlq: list[dict[str, Any]] = []
    while batch := aws.sqs.receive_message(QueueUrl=aws.dlq, MaxNumberOfMessages=10).get("Messages", []):
        dlq += batch
        for m in batch:
            aws.sqs.delete_message(QueueUrl=aws.dlq, ReceiptHandle=m["ReceiptHandle"])
    stats["dlq"] = len(dlq)
    aws.dlq_ids = sorted(_id_of(m["Body"]) for m in dlq)
    return dict(stats)


def _id_of(body: str) -> str:
    try:
        return str(json.loads(body).get("id"))
    except (ValueError, AttributeError):
        return body


def replies(aws: SimpleNamespace) -> tuple[dict[str, dict[str, Any]], Counter[str]]:
    """Latest reply per id, and how many times each reply object was written (object versions)."""
    versions = aws.s3.list_object_versions(Bucket=RESULTS, Prefix="replies/").get("Versions", [])
    writes = Counter(v["Key"].removeprefix("replies/").removesuffix(".json") for v in versions)
    latest = {
        key.removeprefix("replies/").removesuffix(".json"): json.loads(
            aws.s3.get_object(Bucket=RESULTS, Key=key)["Body"].read()
        )
        for key in {v["Key"] for v in versions}
    }
    return latest, writes


@pytest.fixture
def sqs_handler(monkeypatch, registry):
    import functions.handlers.sqs as module

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    return module.handler


def request(rid: str, text: str, model: str = EMBED) -> str:
    return json.dumps({"id": rid, "model": model, "inputs": [text], "reply_to": REPLIES})


def test_sqs_duplicates_and_disorder_give_exactly_one_result_per_message(aws, sqs_handler, predicted, record):
    # GIVEN 30 messages, every batch delivered twice and shuffled
    bodies = {f"m{i}": request(f"m{i}", f"sentence number {i}", EMBED if i % 3 else "intent-classifier")
              for i in range(30)}  # fmt: skip
    for body in bodies.values():
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    # WHEN the queue is drained
    stats = drive_sqs(aws, sqs_handler, duplicates=True)
    latest, writes = replies(aws)
    # THEN each message has exactly one result, written exactly once, none lost, none in the DLQ
    assert sorted(latest) == sorted(bodies) and set(writes.values()) == {1} and stats["dlq"] == 0
    assert all(latest[rid]["id"] == rid and len(latest[rid]["outputs"]) == 1 for rid in bodies)
    inferences = Counter(predicted[f"sentence number {i}"] for i in range(30))
    record("batch", "SQS: duplicate + out-of-order deliveries",
           {"messages": len(bodies), "deliveries": stats["deliveries"], "invocations": stats["invocations"],
            "results": len(latest), "result_writes_max": max(writes.values()), "lost": 0, "dlq": stats["dlq"],
            "inferences_per_message": dict(sorted(inferences.items()))},
           "claims in the idempotency store before inference: a redelivery neither infers nor replies again")
    assert set(inferences) == {1}, inferences  # every message inferred exactly once


def test_sqs_faults_on_result_writes_in_equals_out_plus_dlq(aws, sqs_handler, record):
    # GIVEN 40 messages: 5 poison, 5 whose result write is always AccessDenied, 10 whose writes meet 503 SlowDown
    # twice (botocore retries it away), 5 whose writes meet SlowDown 7 times (beyond one invocation's retries)
    attempts: Counter[str] = Counter()

    def fault(url: str) -> tuple[int, str] | None:
        rid = url.rsplit("/", 1)[-1].removesuffix(".json")
        attempts[rid] += 1
        if rid.startswith("denied"):
            return 403, "AccessDenied"
        if rid.startswith("slow") and attempts[rid] <= 2:
            return 503, "SlowDown"
        if rid.startswith("long") and attempts[rid] <= 7:
            return 503, "SlowDown"
        return None

    injected = inject(aws.client, "PutObject", fault)
    bodies = [request(f"ok{i}", f"fine {i}") for i in range(15)]
    bodies += [request(f"slow{i}", f"slow {i}") for i in range(10)]
    bodies += [request(f"long{i}", f"long {i}") for i in range(5)]
    bodies += [request(f"denied{i}", f"denied {i}") for i in range(5)]
    bodies += [
        "{not json",
        "[]",
        json.dumps({"id": "x", "model": "nope", "inputs": ["a"], "reply_to": REPLIES}),
        request("p-too-many", "a")[:-1] + ', "parameters": {"nope": 1}}',
        json.dumps({"id": "p-exfil", "model": EMBED, "inputs": ["a"], "reply_to": "s3://evil/x/"}),
    ]
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    # WHEN the queue is drained (each batch once)
    stats = drive_sqs(aws, sqs_handler, duplicates=False)
    latest, writes = replies(aws)
    # THEN in = out + DLQ; the DLQ holds exactly the poison and persistently failing messages
    assert len(bodies) == len(latest) + stats["dlq"], (len(bodies), sorted(latest), aws.dlq_ids, dict(injected))
    assert sorted(latest) == sorted([f"ok{i}" for i in range(15)] + [f"slow{i}" for i in range(10)]
                                    + [f"long{i}" for i in range(5)])  # fmt: skip
    assert stats["dlq"] == 10 and set(writes.values()) == {1}
    assert sum(1 for rid in aws.dlq_ids if str(rid).startswith("denied")) == 5
    record("faults", "SQS: S3 faults on result writes",
           {"messages_in": len(bodies), "results_out": len(latest), "dlq": stats["dlq"], "lost": 0,
            "injected": dict(injected), "invocations": stats["invocations"],
            "retry_sleeps_recorded": len(aws.slept)},
           "503 SlowDown x2: recovered by botocore retries; x7: recovered on redelivery; AccessDenied: DLQ after "
           f"maxReceiveCount={MAX_RECEIVES}; 5 poison: DLQ")  # fmt: skip


def test_sqs_message_limits_at_and_over(aws, sqs_handler, registry, record):
    limits = registry.get(EMBED).limits
    at = [
        json.dumps({"id": "batch-at", "model": EMBED, "inputs": ["x"] * limits.max_batch, "reply_to": REPLIES}),
        json.dumps({"id": "chars-at", "model": EMBED, "inputs": ["a" * limits.max_input_chars], "reply_to": REPLIES}),
    ]
    over = [
        json.dumps({"id": "batch-over", "model": EMBED, "inputs": ["x"] * (limits.max_batch + 1),
                    "reply_to": REPLIES}),
        json.dumps({"id": "chars-over", "model": EMBED, "inputs": ["a" * (limits.max_input_chars + 1)],
                    "reply_to": REPLIES}),
    ]  # fmt: skip
    for body in at + over:
        aws.sqs.send_message(QueueUrl=aws.queue, MessageBody=body)
    stats = drive_sqs(aws, sqs_handler, duplicates=False)
    latest, _ = replies(aws)
    assert sorted(latest) == ["batch-at", "chars-at"] and stats["dlq"] == 2
    record(
        "limits",
        "SQS inputs per message",
        {"limit": limits.max_batch, "at_limit": "delivered", "over_limit": "poison → DLQ"},
    )
    record(
        "limits",
        "SQS characters per input",
        {"limit": limits.max_input_chars, "at_limit": "delivered", "over_limit": "poison → DLQ"},
        "no maas cap on message bytes: SQS's own 256 KiB (1 MiB) limit applies",
    )


# --- S3 ----------------------------------------------------------------------------------------------------
@pytest.fixture
def s3_handler(monkeypatch, registry):
    import functions.handlers.s3 as module

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    return module.handler


def put(aws: SimpleNamespace, key: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    body = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
    aws.s3.put_object(Bucket=BATCH, Key=key, Body=body)
    head = aws.s3.head_object(Bucket=BATCH, Key=key)
    return s3_put_event(BATCH, key, etag=head["ETag"], size=head["ContentLength"], version_id=head.get("VersionId"))


def invoke_async(handler: Any, event: dict[str, Any], tries: int = 3) -> str:
    """Lambda's asynchronous invoke: the first try and 2 retries, then the on-failure destination."""
    for _ in range(tries):
        try:
            handler(event, local_context())
            return "ok"
        except Exception:
            continue
    return "dlq"


def output_versions(aws: SimpleNamespace, key: str) -> list[dict[str, Any]]:
    return [v for v in aws.s3.list_object_versions(Bucket=BATCH, Prefix=key).get("Versions", []) if v["Key"] == key]


def test_s3_duplicate_and_stale_events_give_one_result_per_object(aws, s3_handler, predicted, record):
    # GIVEN 4 objects each written twice (v1 then v2) before any event arrives
    events = []
    for n in range(4):
        key = f"inputs/{EMBED}/doc{n}.jsonl"
        events.append(put(aws, key, [{"id": f"d{n}-v1-{i}", "inputs": f"old text {n} {i}"} for i in range(3)]))
        events.append(put(aws, key, [{"id": f"d{n}-v2-{i}", "inputs": f"new text {n} {i}"} for i in range(3)]))
    # WHEN every event is delivered twice, in random order
    deliveries = events * 2
    random.Random(11).shuffle(deliveries)
    outcomes = Counter(invoke_async(s3_handler, event) for event in deliveries)
    # THEN each output holds the newest version's lines, written exactly once, whatever the order
    writes = {}
    for n in range(4):
        key = f"outputs/{EMBED}/doc{n}.jsonl"
        versions = output_versions(aws, key)
        writes[key] = len(versions)
        lines = aws.s3.get_object(Bucket=BATCH, Key=key)["Body"].read().decode().splitlines()
        assert [json.loads(line)["id"] for line in lines] == [f"d{n}-v2-{i}" for i in range(3)]
    assert set(writes.values()) == {1} and outcomes == {"ok": len(deliveries)}
    newest = Counter(predicted[f"new text {n} {i}"] for n in range(4) for i in range(3))
    stale = sum(predicted[f"old text {n} {i}"] for n in range(4) for i in range(3))
    assert set(newest) == {1}  # each newest line inferred exactly once
    record("batch", "S3: duplicate + out-of-order events (versioned objects)",
           {"objects": 4, "versions_per_object": 2, "events_delivered": len(deliveries), "results": len(writes),
            "writes_per_output": 1, "stale_overwrites": 0, "inferences_per_newest_line": 1,
            "stale_lines_inferred_then_discarded": stale},
           "an event for a replaced version is detected (VersionId / If-Match) and writes nothing")  # fmt: skip


@pytest.mark.parametrize(
    ("label", "fault_for", "expected"),
    [
        ("503 SlowDown x2 (botocore retries)", lambda n: (503, "SlowDown") if n <= 2 else None, "ok"),
        ("503 SlowDown x6 (one invocation fails, the async retry succeeds)",
         lambda n: (503, "SlowDown") if n <= 6 else None, "ok"),
        ("AccessDenied always", lambda n: (403, "AccessDenied"), "dlq"),
        ("503 ServiceUnavailable always", lambda n: (503, "ServiceUnavailable"), "dlq"),
    ],
    ids=["slowdown-x2", "slowdown-x6", "access-denied", "unavailable"],
)  # fmt: skip
def test_s3_job_faults_on_output_writes(aws, s3_handler, record, label, fault_for, expected):
    calls: Counter[str] = Counter()

    def fault(url: str) -> tuple[int, str] | None:
        if "/outputs/" not in url or ".summary.json" in url or ".idempotency" in url:
            return None
        calls["n"] += 1
        verdict: tuple[int, str] | None = fault_for(calls["n"])
        return verdict

    injected = inject(aws.client, "PutObject", fault)
    lines = [{"id": i, "inputs": f"line {i}"} for i in range(5)]
    event = put(aws, f"inputs/{EMBED}/job.jsonl", lines)
    outcome = invoke_async(s3_handler, event)
    output = output_versions(aws, f"outputs/{EMBED}/job.jsonl")
    summary = output_versions(aws, f"outputs/{EMBED}/job.jsonl.summary.json")
    assert outcome == expected
    if expected == "ok":  # in = out: every line has its result, written once
        body = aws.s3.get_object(Bucket=BATCH, Key=f"outputs/{EMBED}/job.jsonl")["Body"].read().decode()
        assert [json.loads(x)["id"] for x in body.splitlines()] == list(range(5)) and len(output) == 1
    else:  # the event goes to the on-failure destination whole; no partial output, no summary claims success
        assert output == [] and summary == []
    record("faults", f"S3 job: {label}",
           {"lines_in": 5, "lines_out": 5 if expected == "ok" else 0, "events_to_dlq": int(expected == "dlq"),
            "lines_in_dlq_event": 5 if expected == "dlq" else 0, "lost": 0, "injected": dict(injected),
            "output_writes": len(output)})  # fmt: skip


def test_s3_object_size_at_and_over_the_limit(aws, s3_handler, monkeypatch, record):
    line = b'{"id": 1, "inputs": "hello"}\n'
    monkeypatch.setenv("MAAS_MAX_OBJECT_BYTES", str(len(line) * 2))
    get_settings.cache_clear()
    statuses = {}
    for name, body in (("at", line * 2), ("over", line * 2 + b" ")):
        key = f"inputs/{EMBED}/{name}.jsonl"
        aws.s3.put_object(Bucket=BATCH, Key=key, Body=body)
        head = aws.s3.head_object(Bucket=BATCH, Key=key)
        s3_handler(s3_put_event(BATCH, key, etag=head["ETag"], size=head["ContentLength"],
                                version_id=head.get("VersionId")), local_context())  # fmt: skip
        summary = json.loads(aws.s3.get_object(Bucket=BATCH, Key=f"outputs/{EMBED}/{name}.jsonl.summary.json")
                             ["Body"].read())  # fmt: skip
        statuses[name] = summary["status"] if summary["error"] is None else summary["error"]["code"]
    assert statuses == {"at": "completed", "over": "payload_too_large"}
    record(
        "limits",
        "S3 object bytes (MAAS_MAX_OBJECT_BYTES, scaled down)",
        {"limit": len(line) * 2, "at_limit": statuses["at"], "over_limit": statuses["over"]},
        "default 2 GiB; refused objects get a rejected summary, never a partial output",
    )
