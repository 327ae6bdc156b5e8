"""The deployed code path over HTTP: boto3 → moto in server mode on 127.0.0.1 → the real handlers."""

from __future__ import annotations

import json
import os

import pytest

from functions.settings import get_settings
from maas_dev.local_aws import run_s3_job, run_sqs_event
from tests.conftest import EVENTS_DIR


@pytest.fixture
def handlers(monkeypatch, registry):
    import functions.handlers.s3 as s3_module
    import functions.handlers.sqs as sqs_module

    for name in ("MAAS_BATCH_BUCKET", "MAAS_IDEMPOTENCY_TABLE", "MAAS_EXPECTED_BUCKET_OWNER", "MAAS_OUTPUT_PART_BYTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAAS_REPLY_ALLOWLIST", "s3://maas-local/replies/")
    get_settings.cache_clear()
    monkeypatch.setattr(s3_module, "get_registry", lambda: registry)
    monkeypatch.setattr(sqs_module, "get_registry", lambda: registry)
    yield
    get_settings.cache_clear()


def test_s3_job_over_http_with_a_multipart_output(handlers, tmp_path, monkeypatch):
    # GIVEN 1,000 lines whose results (all 157 intent scores each) exceed one 5 MiB upload part
    monkeypatch.setenv("MAAS_OUTPUT_PART_BYTES", str(5 * 1024 * 1024))
    get_settings.cache_clear()
    lines = [json.dumps({"id": f"u{i}", "inputs": f"please book flight number {i}", "parameters": {"top_k": 157}})
             for i in range(1_000)]
    lines.insert(500, '{"id": "bad", "inputs": ')
    source = tmp_path / "utterances.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "results.jsonl"
    endpoint_before = os.environ.get("AWS_ENDPOINT_URL_S3")

    # WHEN the local runner uploads it to a moto server and runs the real S3 handler over HTTP
    result = run_s3_job(source, model="intent-classifier", out=out)

    # THEN the output arrived in order, as a multipart object, with the summary's counts
    assert result.summary["counts"] == {"total": 1_001, "succeeded": 1_000, "failed": 1}
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == [f"u{i}" for i in range(500)] + [None] + [f"u{i}" for i in range(500, 1_000)]
    assert len(got[0]["output"]) == 157 and result.output_etag.endswith("-2")
    assert result.response["jobs"][0]["status"] == "completed"
    # AND the process environment is as it was (no endpoint leaks into other code)
    assert os.environ.get("AWS_ENDPOINT_URL_S3") == endpoint_before


def test_sqs_sample_event_over_http(handlers):
    event = json.loads((EVENTS_DIR / "sqs_batch.json").read_text())
    result = run_sqs_event(event)
    assert len(result["batchItemFailures"]) == 4
    assert sorted(result["replies"]) == ["s3://maas-local/replies/req-embed-1.json",
                                         "s3://maas-local/replies/req-intent-1.json"]
