"""S3-backed building blocks: the conditional-write idempotency store and the streaming upload."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError
from moto import mock_aws

from functions.batch.idempotency import S3PersistenceLayer
from functions.batch.s3io import StreamingUpload
from functions.context import DeadlineContext

BUCKET = "maas-state"


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def idempotent(s3, calls: list[str], fail: bool = False, store: S3PersistenceLayer | None = None):
    store = store or S3PersistenceLayer(s3, BUCKET, "outputs/.idempotency/")
    config = IdempotencyConfig()
    config.register_lambda_context(DeadlineContext(20, function_name="maas-test", request_id="lambda-req-123"))

    @idempotent_function(data_keyword_argument="job", persistence_store=store, config=config, key_prefix="t")
    def work(*, job: dict) -> dict:
        calls.append(job["key"])
        if fail:
            raise RuntimeError("transient")
        return {"done": job["key"]}

    return work


def records(s3) -> list[dict]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/.idempotency/").get("Contents", [])
    return [json.loads(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()) for o in listed]


def test_second_call_returns_the_stored_result_without_running(s3):
    calls: list[str] = []
    work = idempotent(s3, calls)
    assert work(job={"key": "a"}) == {"done": "a"}
    assert work(job={"key": "a"}) == {"done": "a"}
    assert calls == ["a"]
    (record,) = records(s3)
    assert record["status"] == "COMPLETED" and record["id"].startswith("t#")


def test_a_failed_run_releases_its_claim(s3):
    calls: list[str] = []
    with pytest.raises(RuntimeError):
        idempotent(s3, calls, fail=True)(job={"key": "a"})
    assert records(s3) == []
    assert idempotent(s3, calls)(job={"key": "a"}) == {"done": "a"} and calls == ["a", "a"]


def test_in_progress_claim_blocks_a_concurrent_run_until_its_invocation_timed_out(s3):
    # GIVEN another invocation holds an in-progress claim on job "b"
    calls: list[str] = []
    store = S3PersistenceLayer(s3, BUCKET, "outputs/.idempotency/")
    work = idempotent(s3, calls, store=store)
    work(job={"key": "seed"})  # configures the store
    record_id = store._get_hashed_idempotency_key({"key": "b"})
    claim = {"id": record_id, "status": "INPROGRESS", "expiration": int(time.time()) + 3600,
             "in_progress_expiration": int(time.time() * 1000) + 60_000, "data": "", "validation": ""}
    s3.put_object(Bucket=BUCKET, Key=store._object_key(record_id), Body=json.dumps(claim).encode())
    # WHEN this invocation gets the same job THEN it does not run it
    with pytest.raises(IdempotencyAlreadyInProgressError):
        work(job={"key": "b"})
    # WHEN the holder's Lambda invocation has timed out THEN the claim is taken over and the job runs
    claim["in_progress_expiration"] = int(time.time() * 1000) - 1
    s3.put_object(Bucket=BUCKET, Key=store._object_key(record_id), Body=json.dumps(claim).encode())
    assert work(job={"key": "b"}) == {"done": "b"} and calls == ["seed", "b"]


def test_streaming_upload_commits_parts_or_leaves_nothing(s3):
    part = 5 * 1024 * 1024
    upload = StreamingUpload(s3, BUCKET, "outputs/big.jsonl", part_bytes=part)
    upload.write(b"x" * (part + 10))
    upload.write(b"y" * 10)
    assert upload.parts == 1  # one full part already sent, the tail still in memory
    upload.abort()
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="outputs/")
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")

    upload = StreamingUpload(s3, BUCKET, "outputs/big.jsonl", part_bytes=part)
    upload.write(b"x" * (part + 10))
    upload.write(b"y" * 20)
    upload.commit()
    head = s3.head_object(Bucket=BUCKET, Key="outputs/big.jsonl")
    assert head["ContentLength"] == part + 30 and head["ETag"].strip('"').endswith("-2")
