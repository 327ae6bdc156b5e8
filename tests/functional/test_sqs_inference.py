"""The SQS handler on real-shaped batches (moto in-process): in = delivered + reported failed, always."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from botocore.exceptions import ClientError
from moto import mock_aws

from functions.batch.s3io import clear_clients, s3_client
from functions.settings import get_settings
from maas_dev.local_aws import local_context, sqs_event
from tests.conftest import EVENTS_DIR

STATE_BUCKET = "maas-batch"
RESULTS = "maas-results"
REPLIES = f"s3://{RESULTS}/replies/"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/maas-replies"


@pytest.fixture
def aws(monkeypatch) -> Any:
    monkeypatch.setenv("MAAS_BATCH_BUCKET", STATE_BUCKET)  # where delivery dedupe records live
    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", f"{REPLIES},{QUEUE_URL}")
    for name in ("MAAS_IDEMPOTENCY_TABLE", "MAAS_EXPECTED_BUCKET_OWNER"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        s3 = boto3.client("s3", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        for bucket in (STATE_BUCKET, RESULTS):
            s3.create_bucket(Bucket=bucket)
        assert sqs.create_queue(QueueName="maas-replies")["QueueUrl"] == QUEUE_URL
        yield SimpleNamespace(s3=s3, sqs=sqs)
    clear_clients()
    get_settings.cache_clear()


@pytest.fixture
def handler(monkeypatch, registry):
    import functions.handlers.sqs as module

    monkeypatch.setattr(module, "get_registry", lambda: registry)
    return module.handler


def request(rid: str, inputs: Any, model: str = "minilm-embed", reply_to: str = REPLIES, **extra: Any) -> str:
    return json.dumps({"id": rid, "model": model, "inputs": inputs, "reply_to": reply_to, **extra})


def s3_replies(aws: Any) -> dict[str, dict[str, Any]]:
    listed = aws.s3.list_objects_v2(Bucket=RESULTS, Prefix="replies/").get("Contents", [])
    return {o["Key"]: json.loads(aws.s3.get_object(Bucket=RESULTS, Key=o["Key"])["Body"].read()) for o in listed}


def queue_replies(aws: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while batch := aws.sqs.receive_message(QueueUrl=QUEUE_URL, MaxNumberOfMessages=10).get("Messages", []):
        out += [json.loads(m["Body"]) for m in batch]
        aws.sqs.delete_message_batch(QueueUrl=QUEUE_URL, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])
    return out


def failed_ids(response: dict[str, Any]) -> set[str]:
    return {item["itemIdentifier"] for item in response["batchItemFailures"]}


POISON = [  # each can never succeed, for a different reason
    "{not json",
    json.dumps({"id": "no-reply-to", "model": "minilm-embed", "inputs": ["x"]}),
    request("wrong-model", ["hello"], model="gpt-9000"),
    request("too-many", [f"s{i}" for i in range(40)]),  # max_batch is 32
    request("too-long", ["x" * 20_001]),  # max_input_chars is 20,000
    request("not-text", ["fine", 123]),
    request("exfiltrate", ["hello"], reply_to="s3://attacker-bucket/loot/"),
]


def test_a_batch_of_100_with_7_poison_messages(aws, handler, registry, monkeypatch):
    # GIVEN 100 messages: 93 good ones for two models (1-3 inputs, replies to S3 or a queue), 7 poison
    rng = random.Random(7)
    poison_at = dict(zip(sorted(rng.sample(range(100), 7)), POISON, strict=True))
    bodies, expected = [], {}
    for n in range(100):
        if n in poison_at:
            bodies.append(poison_at[n])
            continue
        inputs = [f"message {n} sentence {k}" for k in range(1 + n % 3)]
        model = "intent-classifier" if n % 4 == 0 else "minilm-embed"
        bodies.append(request(f"req-{n}", inputs, model=model, reply_to=QUEUE_URL if n % 5 == 0 else REPLIES))
        expected[f"req-{n}"] = len(inputs)
    event = sqs_event(bodies)
    message_ids = [r["messageId"] for r in event["Records"]]
    calls: list[int] = []
    for name in ("minilm-embed", "intent-classifier"):
        pipeline = registry.get(name)
        monkeypatch.setattr(pipeline, "execute", lambda x, p, f=pipeline.execute: calls.append(len(x)) or f(x, p))

    # WHEN the batch is handled
    response = handler(event, local_context())

    # THEN exactly the 7 poison messages are reported failed (they return to the queue, then the DLQ)
    assert failed_ids(response) == {message_ids[n] for n in poison_at}
    # AND the 93 others have their results delivered, each with one output per input: 0 lost
    delivered = list(s3_replies(aws).values()) + queue_replies(aws)
    assert sorted(r["id"] for r in delivered) == sorted(expected)
    assert all(len(r["outputs"]) == expected[r["id"]] for r in delivered)
    assert len(delivered) + len(failed_ids(response)) == 100
    # AND the good messages were batched into few ORT runs, not one per message
    assert max(calls) <= 32 and len(calls) <= 12, calls


def test_sqs_reply_carries_model_version_and_outputs(aws, handler, registry):
    handler(sqs_event([request("one", "what is my balance", model="intent-classifier", reply_to=QUEUE_URL,
                               parameters={"top_k": 2})]), local_context())
    (reply,) = queue_replies(aws)
    assert reply["model_version"] == registry.get("intent-classifier").manifest.version
    assert len(reply["outputs"]) == 1 and len(reply["outputs"][0]) == 2 and reply["truncated"] == [False]


def fail_put(key_part: str) -> None:
    def boom(params: dict[str, Any], **_: Any) -> None:
        if key_part in params.get("Key", ""):
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "PutObject")

    s3_client("").meta.events.register("provide-client-params.s3.PutObject", boom)


def test_a_failed_result_write_reports_the_message_instead_of_dropping_it(aws, handler):
    # GIVEN S3 refuses the result write of two of five messages, and the reply queue has been deleted
    fail_put("replies/req-1.json")
    fail_put("replies/req-3.json")
    bodies = [request(f"req-{n}", [f"text {n}"]) for n in range(5)] + [request("to-queue", ["q"], reply_to=QUEUE_URL)]
    aws.sqs.delete_queue(QueueUrl=QUEUE_URL)
    event = sqs_event(bodies)
    ids = [r["messageId"] for r in event["Records"]]
    # WHEN the batch is handled THEN exactly the affected messages are reported failed
    response = handler(event, local_context())
    assert failed_ids(response) == {ids[1], ids[3], ids[5]}
    assert sorted(s3_replies(aws)) == [f"replies/req-{n}.json" for n in (0, 2, 4)]
    # WHEN SQS redelivers them after the fault cleared THEN their results arrive: nothing was lost
    clear_clients()
    aws.sqs.create_queue(QueueName="maas-replies")
    retry = {"Records": [r for r in event["Records"] if r["messageId"] in failed_ids(response)]}
    assert handler(retry, local_context()) == {"batchItemFailures": []}
    assert len(s3_replies(aws)) == 5 and [r["id"] for r in queue_replies(aws)] == ["to-queue"]


def test_redelivered_message_is_not_replied_twice(aws, handler):
    event = sqs_event([request("once", ["hello"], reply_to=QUEUE_URL)])
    handler(event, local_context())
    handler(event, local_context())  # at-least-once: the same messageId again
    assert [r["id"] for r in queue_replies(aws)] == ["once"]


def test_fifo_failure_holds_back_the_rest_of_its_group(aws, handler):
    bodies = [request("a", ["x"]), "{poison", request("c", ["y"]), request("d", ["z"])]
    event = sqs_event(bodies, queue="maas-requests.fifo")
    ids = [r["messageId"] for r in event["Records"]]
    assert failed_ids(handler(event, local_context())) == set(ids[1:])
    assert sorted(s3_replies(aws)) == ["replies/a.json"]


def test_an_all_poison_batch_fails_the_invocation(aws, handler):
    with pytest.raises(BatchProcessingError):
        handler(sqs_event(["{", "[]"]), local_context())


def test_sample_event_through_maas_invoke_dispatch(aws, handler, monkeypatch):
    # GIVEN events/sqs_batch.json (2 good, 4 poison) and an allow-list naming its reply prefix
    from maas_dev.invoke import invoke_event

    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", "s3://maas-local/replies/")
    get_settings.cache_clear()
    aws.s3.create_bucket(Bucket="maas-local")
    event = json.loads((EVENTS_DIR / "sqs_batch.json").read_text())
    # WHEN `maas invoke` dispatches it THEN the poison ones are reported and the good ones answered
    response = invoke_event(event)
    assert len(response["batchItemFailures"]) == 4
    keys = [o["Key"] for o in aws.s3.list_objects_v2(Bucket="maas-local", Prefix="replies/")["Contents"]]
    assert sorted(keys) == ["replies/req-embed-1.json", "replies/req-intent-1.json"]


def test_a_reply_can_never_overwrite_batch_job_state(aws, handler, monkeypatch):
    # GIVEN replies allowed into the batch bucket's output prefix (as infra allows them)
    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", f"s3://{STATE_BUCKET}/outputs/")
    get_settings.cache_clear()
    reply_to = f"s3://{STATE_BUCKET}/outputs/minilm-embed/"
    event = sqs_event([request("big.jsonl.summary", ["x"], reply_to=reply_to),
                       request("h", ["x"], reply_to=f"s3://{STATE_BUCKET}/outputs/.idempotency/"),
                       request("fine", ["x"], reply_to=reply_to)])
    # WHEN handled THEN ids that would land on a job summary or a dedupe record are refused, alone
    ids = [r["messageId"] for r in event["Records"]]
    assert failed_ids(handler(event, local_context())) == set(ids[:2])
    assert aws.s3.head_object(Bucket=STATE_BUCKET, Key="outputs/minilm-embed/fine.json")
