"""The container queue worker: the SQS handler's guarantees without Lambda's event source mapping."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from moto import mock_aws

from functions.batch.s3io import clear_clients, s3_client, sqs_client
from functions.batch.sqs_jobs import SqsInferenceRunner
from functions.batch.worker import QueueWorker
from functions.settings import get_settings
from maas_dev.local_aws import s3_put_event

BUCKET = "maas-batch"


@pytest.fixture
def worker(monkeypatch, registry) -> Any:
    monkeypatch.setenv("MAAS_BATCH_BUCKET", BUCKET)
    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", f"s3://{BUCKET}/replies/")
    for name in ("MAAS_IDEMPOTENCY_TABLE", "MAAS_EXPECTED_BUCKET_OWNER", "MAAS_INPUT_PREFIX", "MAAS_OUTPUT_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        s3, sqs = s3_client(""), sqs_client()
        s3.create_bucket(Bucket=BUCKET)
        url = sqs.create_queue(QueueName="maas-jobs", Attributes={"VisibilityTimeout": "120"})["QueueUrl"]
        runner = SqsInferenceRunner(get_settings(), registry, s3=s3, sqs=sqs)
        yield QueueWorker(runner, sqs, url)
    clear_clients()
    get_settings.cache_clear()


def in_flight(worker: Any) -> tuple[int, int]:
    attributes = worker.sqs.get_queue_attributes(
        QueueUrl=worker.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def test_worker_answers_requests_runs_s3_jobs_and_leaves_failures_on_the_queue(worker):
    s3, sqs, url = worker.runner.s3, worker.sqs, worker.queue_url
    # GIVEN an inference request, an S3 notification (the bucket notifies the queue) and a poison message
    s3.put_object(Bucket=BUCKET, Key="inputs/minilm-embed/a.jsonl", Body=b'{"id": 1, "inputs": "hello"}\n')
    head = s3.head_object(Bucket=BUCKET, Key="inputs/minilm-embed/a.jsonl")
    notification = s3_put_event(BUCKET, "inputs/minilm-embed/a.jsonl", etag=head["ETag"], size=1)
    for body in (json.dumps({"id": "r1", "model": "minilm-embed", "inputs": "hi", "reply_to": f"s3://{BUCKET}/replies/"}),
                 json.dumps(notification), json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}), "{poison"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    # WHEN the worker polls once
    assert worker.poll_once(wait_seconds=0) == (3, 1)
    # THEN the request is answered, the S3 job ran, and only the poison message is still held
    assert json.loads(s3.get_object(Bucket=BUCKET, Key="replies/r1.json")["Body"].read())["id"] == "r1"
    assert s3.head_object(Bucket=BUCKET, Key="outputs/minilm-embed/a.jsonl.summary.json")
    assert in_flight(worker) == (0, 1)  # invisible until its timeout, then retried, then the DLQ


def test_worker_stops_when_asked(worker):
    stop = threading.Event()
    stop.set()
    worker.run(stop, wait_seconds=0)  # returns at once: SIGTERM sets this event
    assert worker.poll_once(wait_seconds=0) == (0, 0)


def test_worker_runs_the_job_an_eventbridge_object_created_message_announces(worker):
    """GPU models: the batch bucket's EventBridge rule puts Object Created events on the job queue."""
    from maas_dev.batch_local import object_created_event

    s3, sqs, url = worker.runner.s3, worker.sqs, worker.queue_url
    s3.put_object(Bucket=BUCKET, Key="inputs/minilm-embed/b c.jsonl", Body=b'{"id": 1, "inputs": "hello"}\n')
    head = s3.head_object(Bucket=BUCKET, Key="inputs/minilm-embed/b c.jsonl")
    event = object_created_event(BUCKET, "inputs/minilm-embed/b c.jsonl", etag=head["ETag"],
                                 size=head["ContentLength"])
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(event))
    assert worker.poll_once(wait_seconds=0) == (1, 0)
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key="outputs/minilm-embed/b c.jsonl.summary.json")["Body"].read())
    assert summary["status"] == "completed" and summary["counts"]["succeeded"] == 1
    assert in_flight(worker) == (0, 0)
