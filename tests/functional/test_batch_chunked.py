"""Chunked S3 jobs with the real minilm-embed model: the state machine's steps (plan, chunk, merge, the failure
notice) as the chunk handler runs them, against moto's S3.

- the local executor (a process pool for the Map, each process loading the model) gives the direct path's output
  byte for byte, for JSONL and CSV (row ids, header), with bad lines and blank lines among them;
- duplicate and retried executions, an object replaced mid-run, a failed execution's summary, and what the
  plan step hands to the direct path (images, rejections) — each at the handler, in-process.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from functions.batch.chunked_jobs import ChunkedJobRunner
from functions.batch.s3io import clear_clients
from functions.settings import get_settings
from maas_dev.batch_local import object_created_event
from maas_dev.local_aws import local_context

BUCKET = "maas-batch"
MODEL = "minilm-embed"
PREFIX_ENV = {"MAAS_INPUT_PREFIX": f"inputs/{MODEL}/", "MAAS_OUTPUT_PREFIX": f"outputs/{MODEL}/"}


def corpus(lines: int, *, seed: int = 7) -> bytes:
    """Sentences of varied length, with bad lines (bad JSON, a number as input, no id) and a few blank ones."""
    rng = random.Random(seed)
    words = ["serverless", "inference", "runs", "batch", "jobs", "on", "chunks", "of", "large", "corpora", "with",
             "small", "functions"]
    out = []
    for n in range(1, lines + 1):
        roll = rng.random()
        if roll < 0.01:
            out.append(b'{"id": "broken')
        elif roll < 0.02:
            out.append(json.dumps({"id": f"n{n}", "inputs": n}).encode())
        elif roll < 0.025:
            out.append(b"   ")
        else:
            text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 40)))
            out.append(json.dumps({"id": f"r{n}", "inputs": text}).encode())
    return b"\n".join(out) + b"\n"


def csv_corpus(lines: int) -> bytes:
    rng = random.Random(3)
    rows = [b"text,lang"]
    for n in range(lines):
        rows.append(b'"unbalanced,en' if n % 97 == 0 else f"sentence {n} {'word ' * rng.randint(1, 30)},en".encode())
    return b"\r\n".join(rows) + b"\r\n"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, registry: Any) -> Iterator[Any]:
    import functions.handlers.chunk as chunk_module
    import functions.handlers.s3 as s3_module

    for name in ("MAAS_IDEMPOTENCY_TABLE", "MAAS_EXPECTED_BUCKET_OWNER", "MAAS_JOB_EVENT_BUS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAAS_BATCH_BUCKET", BUCKET)
    monkeypatch.setenv("MAAS_CHUNK_BYTES", str(64 * 1024))
    for name, value in PREFIX_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(chunk_module, "get_registry", lambda: registry)
    monkeypatch.setattr(s3_module, "get_registry", lambda: registry)
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield s3
    clear_clients()


def put(s3: Any, name: str, body: bytes) -> dict[str, Any]:
    key = f"inputs/{MODEL}/{name}"
    found = s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return object_created_event(BUCKET, key, etag=found["ETag"], size=len(body), version_id=found["VersionId"])


def read(s3: Any, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return data


def run_all(event: dict[str, Any], execution: str = "arn:aws:states:us-east-1:1:execution:sm:a") -> dict[str, Any]:
    """The state machine's plan, by hand, in this process: plan, every chunk (one per Map batch), merge."""
    from functions.handlers.chunk import handler

    plan = handler({"step": "plan", "event": event, "execution": execution}, local_context())
    if plan["route"] == "chunks":
        s3 = boto3.client("s3", region_name="us-east-1")
        items = [json.loads(line) for line in read(s3, plan["manifest_key"]).splitlines()]
        for item in items:
            handler({"BatchInput": {"step": "chunk", "run": plan["run"]}, "Items": [item]}, local_context())
        handler({"step": "merge", "run": plan["run"]}, local_context())
    return plan


def direct(s3: Any, name: str, body: bytes) -> tuple[bytes, dict[str, Any]]:
    from functions.handlers.s3 import handler

    event = put(s3, name, body)
    handler(event, local_context())
    output = f"outputs/{MODEL}/{name}" + ("" if name.endswith(".jsonl") else ".jsonl")
    return read(s3, output), json.loads(read(s3, f"outputs/{MODEL}/{name}.summary.json"))


def test_the_process_pool_gives_the_direct_paths_output_byte_for_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built_artifacts: dict[str, Path]
) -> None:
    """The real model through the whole local executor: spawned workers load minilm-embed as Lambda would."""
    from maas_dev.batch_local import run_batch, sizing_for

    monkeypatch.setenv("MAAS_MODELS", str(built_artifacts[MODEL]))
    monkeypatch.setenv("MAAS_CHUNK_BYTES", str(64 * 1024))
    for name in ("MAAS_BATCH_BUCKET", "MAAS_INPUT_PREFIX", "MAAS_OUTPUT_PREFIX", "MAAS_IDEMPOTENCY_TABLE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    (tmp_path / "corpus.jsonl").write_bytes(corpus(3000))
    sizing = sizing_for(MODEL)
    chunked = run_batch(tmp_path / "corpus.jsonl", model=MODEL, route="chunks", workers=2, out=tmp_path / "c.jsonl",
                        sizing=sizing)
    one = run_batch(tmp_path / "corpus.jsonl", model=MODEL, route="direct", out=tmp_path / "d.jsonl", sizing=sizing)
    assert chunked.chunked is not None and chunked.chunked.plan["chunks"] >= 3
    assert chunked.chunked.processed == chunked.chunked.plan["chunks"]
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "d.jsonl").read_bytes()
    for what in ("counts", "errors_by_code", "input_tokens", "predict_calls", "status"):
        assert chunked.summary[what] == one.summary[what], what
    assert chunked.summary["run"]["route"] == "local"


def test_chunked_csv_keeps_row_ids_and_its_header(aws: Any) -> None:
    body = csv_corpus(2500)
    plan = run_all(put(aws, "rows.csv", body))
    assert plan["route"] == "chunks" and plan["chunks"] >= 2 and plan["run"]["header"]["line"] == 1
    chunked = read(aws, f"outputs/{MODEL}/rows.csv.jsonl")
    expected, summary = direct(aws, "same-rows.csv", body)
    assert chunked == expected and summary["counts"]["failed"] == 26
    assert [json.loads(line)["id"] for line in chunked.splitlines()[:3]] == [1, 2, 3]


def test_a_second_execution_for_the_same_object_is_a_duplicate_and_a_retried_step_changes_nothing(aws: Any) -> None:
    from functions.handlers.chunk import handler

    event = put(aws, "twice.jsonl", corpus(1500))
    first = handler({"step": "plan", "event": event, "execution": "exec-a"}, local_context())
    again = handler({"step": "plan", "event": event, "execution": "exec-a"}, local_context())  # the step retried
    other = handler({"step": "plan", "event": event, "execution": "exec-b"}, local_context())  # the event twice
    assert first["route"] == "chunks" and again == first and other["route"] == "duplicate"
    run_all(event, execution="exec-a")
    output = read(aws, f"outputs/{MODEL}/twice.jsonl")
    # the merge retried after it finished: same summary, nothing rewritten; a later plan: already done
    summary = handler({"step": "merge", "run": first["run"]}, local_context())
    assert summary["status"] == "completed" and read(aws, f"outputs/{MODEL}/twice.jsonl") == output
    assert handler({"step": "plan", "event": event, "execution": "exec-c"}, local_context())["route"] == "done"
    assert not aws.list_objects_v2(Bucket=BUCKET, Prefix=first["run"]["prefix"]).get("Contents")


def test_an_object_replaced_mid_run_writes_no_output(aws: Any) -> None:
    from functions.handlers.chunk import handler

    event = put(aws, "moving.jsonl", corpus(1200))
    plan = handler({"step": "plan", "event": event, "execution": "exec-a"}, local_context())
    put(aws, "moving.jsonl", corpus(1200, seed=8))  # a newer version: its own event produces the result
    items = [json.loads(line) for line in read(aws, plan["manifest_key"]).splitlines()]
    for item in items:
        handler({"BatchInput": {"step": "chunk", "run": plan["run"]}, "Items": [item]}, local_context())
    assert handler({"step": "merge", "run": plan["run"]}, local_context())["status"] == "superseded"
    with pytest.raises(aws.exceptions.ClientError):
        aws.head_object(Bucket=BUCKET, Key=f"outputs/{MODEL}/moving.jsonl")


def test_a_failed_execution_leaves_a_failed_summary_with_its_redrive_and_a_redrive_completes_it(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.handlers.chunk import handler

    events: list[dict[str, Any]] = []

    class Events:
        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            events.extend(Entries)
            return {"FailedEntryCount": 0}

    monkeypatch.setenv("MAAS_JOB_EVENT_BUS", "default")
    get_settings.cache_clear()
    monkeypatch.setattr("functions.batch.notify.events_client", lambda: Events())
    event = put(aws, "fails.jsonl", corpus(1500))
    arn = "arn:aws:states:us-east-1:123456789012:execution:maas-dev-minilm-embed-jobs:abc"
    plan = handler({"step": "plan", "event": event, "execution": arn}, local_context())
    items = [json.loads(line) for line in read(aws, plan["manifest_key"]).splitlines()]
    handler({"BatchInput": {"step": "chunk", "run": plan["run"]}, "Items": [items[0]]}, local_context())
    status_change = {
        "version": "0", "source": "aws.states", "detail-type": "Step Functions Execution Status Change",
        "detail": {"executionArn": arn, "status": "FAILED", "error": "States.ExceedToleratedFailureThreshold",
                   "cause": "chunk 1 failed after its retries", "input": json.dumps(event)},
    }
    assert handler(status_change, local_context())["status"] == "failed"
    summary = json.loads(read(aws, f"outputs/{MODEL}/fails.jsonl.summary.json"))
    assert summary["status"] == "failed" and f"redrive-execution --execution-arn {arn}" in summary["error"]["message"]
    assert summary["run"]["redrive"].endswith(arn)
    # the redrive: the committed chunk is skipped, the rest run, the summary says completed
    results = [handler({"BatchInput": {"step": "chunk", "run": plan["run"]}, "Items": [item]}, local_context())
               for item in items]
    assert results[0]["chunks"][0]["skipped"] and not any(r["chunks"][0]["skipped"] for r in results[1:])
    assert handler({"step": "merge", "run": plan["run"]}, local_context())["status"] == "completed"
    details = [json.loads(e["Detail"]) for e in events]
    assert [d["status"] for d in details] == ["failed", "completed"]
    assert {e["Source"] for e in events} == {"maas.batch"} and {e["DetailType"] for e in events} == {
        "Batch Job Finished"}
    assert details[1]["counts"]["total"] == 1500 - sum(1 for line in corpus(1500).splitlines() if not line.strip())


def test_what_cannot_be_chunked_runs_or_is_rejected_the_direct_way(
    aws: Any, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = ChunkedJobRunner(get_settings(), registry, aws)
    unsupported = runner.plan(put(aws, "notes.txt", b"hello\n" * 10), "exec-a")
    assert unsupported == {**unsupported, "route": "direct", "status": "rejected"}
    wrong_model = object_created_event(BUCKET, "inputs/other-model/x.jsonl", etag="e", size=5)
    assert runner.plan(wrong_model, "exec-a")["route"] == "ignored"  # not under this function's prefix
    header_only = run_all(put(aws, "empty.csv", b"text\n"))
    assert header_only["route"] == "chunks" and read(aws, f"outputs/{MODEL}/empty.csv.jsonl") == b""
    # more chunks than the merge may copy: refused, naming the limit (chunks of 1 KiB here: 5,000 KiB at most)
    monkeypatch.setenv("MAAS_CHUNK_BYTES", "1024")
    get_settings.cache_clear()
    huge = ChunkedJobRunner(get_settings(), registry, aws).plan(put(aws, "huge.jsonl", corpus(60_000)), "exec-a")
    assert huge["route"] == "direct" and huge["status"] == "rejected"
    summary = json.loads(read(aws, f"outputs/{MODEL}/huge.jsonl.summary.json"))
    assert summary["error"]["code"] == "payload_too_large" and "5,000 chunks" in summary["error"]["message"]


def test_the_sample_events_replay_through_maas_invoke(monkeypatch: pytest.MonkeyPatch, registry: Any) -> None:
    """events/eventbridge_s3_object_created.json (the deployed direct route) and the state machine's step events
    dispatch to their handlers; the Object Created sample runs against the object it announces."""
    import functions.handlers.s3 as s3_module
    from maas_dev.invoke import handler_module_for, invoke_event
    from maas_dev.local_aws import SAMPLE_JSONL, SAMPLE_KEY
    from tests.conftest import EVENTS_DIR

    routes = {path.name: handler_module_for(json.loads(path.read_text())) for path in EVENTS_DIR.glob("*.json")}
    assert routes["eventbridge_s3_object_created.json"] == "functions.handlers.s3"
    assert {routes[name] for name in routes if name.startswith(("sfn_", "eventbridge_sfn"))} == {
        "functions.handlers.chunk"}
    for name in ("MAAS_BATCH_BUCKET", "MAAS_INPUT_PREFIX", "MAAS_OUTPUT_PREFIX", "MAAS_IDEMPOTENCY_TABLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(s3_module, "get_registry", lambda: registry)
    get_settings.cache_clear()
    with mock_aws():
        clear_clients()
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="maas-local")
        s3.put_object(Bucket="maas-local", Key=SAMPLE_KEY, Body=SAMPLE_JSONL)
        response = invoke_event(json.loads((EVENTS_DIR / "eventbridge_s3_object_created.json").read_text()))
    clear_clients()
    (job,) = response["jobs"]
    assert job["status"] == "completed" and job["counts"] == {"total": 3, "succeeded": 2, "failed": 1}


def test_maas_batch_plan_prints_the_route_chunks_concurrency_time_and_cost(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from maas_dev.cli import app

    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small.write_bytes(corpus(200))
    large.write_bytes(corpus(60_000))  # ~7 MiB: over minilm-embed's 5.7 MiB threshold
    runner = CliRunner()
    direct = runner.invoke(app, ["batch", str(small), "--plan", "--model", MODEL])
    assert direct.exit_code == 0, direct.output
    assert "route       direct" in direct.output and "minilm-embed.json (mixed set, S3 job)" in direct.output
    chunked = runner.invoke(app, ["batch", str(large), "--plan", "--model", MODEL, "--concurrency", "3"])
    assert chunked.exit_code == 0, chunked.output
    out = chunked.output
    assert "route       state machine" in out and "concurrency 2 (MaxConcurrency 3)" in out
    assert "chunks      2 of 5.7 MiB" in out and "wall time" in out and "cost        ~$" in out
    assert "records in 2 chunks" in out
    unknown = runner.invoke(app, ["batch", "s3://bucket/elsewhere/x.jsonl", "--plan"])
    assert unknown.exit_code == 2 and "--model" in unknown.output and "input prefix" in unknown.output
    unreachable = runner.invoke(app, ["batch", f"s3://bucket/inputs/{MODEL}/x.jsonl", "--plan", "--endpoint-url",
                                      "http://127.0.0.1:9"])
    assert unreachable.exit_code == 2 and "s3://bucket/inputs/" in " ".join(unreachable.output.split())
