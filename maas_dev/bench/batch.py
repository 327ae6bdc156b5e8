"""Batch throughput in `maas bench`: the S3 job path next to the HTTP path and bare ``session.run``.

Same model, same records, same batch size (the model's ``max_batch``, which is what S3 jobs run at),
records/s measured back to back in one run:

- ``bare_session_run``: the records tokenized up front, ``session.run`` on each chunk in input order
  (each chunk padded to its longest record) — the ceiling for this batch size;
- ``pipeline_in_process``: ``pipeline.predict`` per chunk (tokenize + run + pool/normalise);
- ``http_task_api``: one keep-alive client POSTing each chunk to ``/models/<name>/predict``;
- ``s3_job``: the real S3 handler code (``S3JobRunner``) on a JSONL object in an in-process moto S3:
  streaming read, per-line validation, length-bucketed batches, streamed JSONL output and summary.

Two record sets: ``uniform`` (every record about ``seq`` tokens, so bucketing cannot help and the
ratio is pure overhead) and ``mixed`` (the held-out sentences: real, varied lengths, where the S3
job's length bucketing pays).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any

from model_build import DATA_DIR

DATA = DATA_DIR
BUCKET = "maas-bench"


def records(pipeline: Any, seq: int, count: int) -> dict[str, list[str]]:
    from maas_dev.bench.common import text_of_tokens

    base = text_of_tokens(pipeline, seq - 4)  # + a distinct number: every record is seq tokens, give or take 2
    sentences = [s for s in (DATA / "heldout_sentences.txt").read_text().splitlines() if s.strip()]
    return {
        "uniform": [f"{i} {base}" for i in range(count)],
        "mixed": [sentences[i % len(sentences)] for i in range(count)],
    }


def _rate(count: int, fn: Callable[[], object], rounds: int) -> float:
    """Best records/s of ``rounds`` timed runs (the least-disturbed one on a noisy machine)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return count / best


def batch_throughput(pipeline: Any, server: Any, *, seq: int, count: int = 512, rounds: int = 2) -> dict[str, Any]:
    import boto3
    from moto import mock_aws

    from functions.batch.s3_jobs import S3JobRunner
    from functions.inference.registry import ModelRegistry
    from functions.settings import Settings
    from maas_dev.local_aws import local_context, s3_put_event

    batch = pipeline.limits.max_batch
    registry = ModelRegistry()
    registry.add(pipeline)
    settings = Settings(batch_bucket=BUCKET)
    url = f"/models/{pipeline.name}/predict"
    results: dict[str, Any] = {"batch": batch, "records": count, "rounds": rounds, "sets": {}}
    for set_name, texts in records(pipeline, seq, count).items():
        chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        feeds = [pipeline.encoder.encode(chunk, truncate=True).feeds() for chunk in chunks]
        tokens = sum(sum(pipeline.encoder.encode(chunk, truncate=True).token_counts) for chunk in chunks)
        def http_path(chunks: list[list[str]] = chunks) -> None:
            # a fresh keep-alive connection per run: the server closes idle ones while other cases run
            conn = http.client.HTTPConnection(server.host, server.port)
            for chunk in chunks:
                conn.request("POST", url, body=json.dumps({"inputs": chunk}),
                             headers={"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise RuntimeError(f"bench request failed: {response.status}")
            conn.close()

        body = "".join(json.dumps({"id": f"r{i}", "inputs": t}) + "\n" for i, t in enumerate(texts)).encode()
        jobs: dict[str, int] = {"n": 0}
        with mock_aws():
            s3 = boto3.client("s3", region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            runner = S3JobRunner(settings, registry, s3, None)

            def s3_job(
                s3: Any = s3, runner: S3JobRunner = runner, body: bytes = body, jobs: dict[str, int] = jobs
            ) -> None:
                jobs["n"] += 1  # a new object each round: idempotency would (rightly) skip a redelivery
                key = f"{settings.input_prefix}{pipeline.name}/bench-{jobs['n']}.jsonl"
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                head = s3.head_object(Bucket=BUCKET, Key=key)
                event = s3_put_event(BUCKET, key, etag=head["ETag"], size=head["ContentLength"],
                                     version_id=head.get("VersionId"))
                outcome = runner.handle(event, local_context())
                summary = outcome["jobs"][0]
                if summary["status"] != "completed" or summary["counts"]["succeeded"] != count:
                    raise RuntimeError(f"bench S3 job did not complete cleanly: {summary}")

            cases = {
                "bare_session_run": lambda feeds=feeds: [pipeline.run(f) for f in feeds],
                "pipeline_in_process": lambda chunks=chunks: [pipeline.predict(c) for c in chunks],
                "http_task_api": http_path,
                "s3_job": s3_job,
            }
            for fn in cases.values():  # warm-up (and a first check that each path works)
                fn()
            rates = {case: _rate(count, fn, rounds) for case, fn in cases.items()}
        bare = rates["bare_session_run"]
        results["sets"][set_name] = {
            "mean_tokens": tokens / count,
            # the JSONL line each record is (with its newline): the S3 job's rate in bytes/s, which routes objects
            # and sizes chunks as deployed (functions/contract/batch_plan.py)
            "mean_line_bytes": len(body) / count,
            "records_per_s": rates,
            "fraction_of_bare": {case: rate / bare for case, rate in rates.items()},
        }
    return results


def batch_lines(batch: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Batch throughput (records/s at batch {batch['batch']}, {batch['records']} records, best of "
        f"{batch['rounds']})",
        "",
        "| record set | mean tokens | bare session.run | in-process pipeline | HTTP task API | S3 job | "
        "S3 job / bare |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in batch["sets"].items():
        r, f = s["records_per_s"], s["fraction_of_bare"]
        lines.append(
            f"| {name} | {s['mean_tokens']:.0f} | {r['bare_session_run']:.0f} | {r['pipeline_in_process']:.0f} "
            f"({f['pipeline_in_process']:.0%}) | {r['http_task_api']:.0f} ({f['http_task_api']:.0%}) | "
            f"{r['s3_job']:.0f} | **{f['s3_job']:.0%}** |"
        )
    lines += [
        "",
        "bare = the records pre-tokenized, `session.run` per chunk in input order; the S3 job reads the JSONL "
        "object from (in-process moto) S3, validates each line, sorts a window of records by length before "
        "batching, and streams the output and summary back — so on mixed lengths it can beat bare.",
    ]
    return lines
