"""`maas batch`, locally: the deployed routes for an S3 object, against a local S3 (moto server on loopback).

- **route**: what EventBridge's two size rules decide as deployed (``functions.contract.batch_plan``: the
  model's measured rate, its batch function's memory and timeout): the direct job function for an object that
  fits one invocation, else the state machine.
- **direct**: ``functions.handlers.s3.handler`` on the EventBridge ``Object Created`` event.
- **chunks**: the state machine's plan, run by hand with the same pieces: ``functions.handlers.chunk.handler``
  plans (same chunk boundaries); the chunk list is read back from S3 as the Map's ItemReader reads it (JSON
  Lines), each item handed over in the Map's ItemBatcher envelope (``{"BatchInput", "Items"}``, one chunk per
  batch) to the same handler in a process pool (``workers`` processes, each loading the model once, as Lambda's
  execution environments do); a chunk that raises is retried (``attempts``, as the Map's Retry does); then the
  same handler merges. Running it again for the same execution (``execution=``) resumes it as a redrive does:
  committed chunks are skipped.

The S3 API is moto's server, in this process (``moto_server``) or any endpoint given (``endpoint_url``).
"""

from __future__ import annotations

import json
import os
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from functions.batch.chunked_jobs import chunk_batch, merge_step, plan_step
from functions.contract.batch_plan import (
    DEFAULT_MAP_CONCURRENCY,
    BatchSizing,
    batch_sizing,
    default_rate,
    read_batch_rate,
)
from maas_dev.local_aws import LOCAL_BUCKET, aws_endpoint, local_context, moto_server

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "docs" / "benchmarks"
_REGION, _ACCOUNT = "us-east-1", "123456789012"


def object_created_event(bucket: str, key: str, *, etag: str, size: int, version_id: str | None = None,
                         sequencer: str | None = None) -> dict[str, Any]:
    """EventBridge's ``Object Created`` event for an object, as the batch bucket's notifications send it."""
    now = datetime.now(UTC)
    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "etag": etag.strip('"'),
                           "sequencer": sequencer or f"{int(now.timestamp() * 1e6):018X}"}
    if version_id and version_id != "null":
        obj["version-id"] = version_id
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Object Created", "source": "aws.s3",
        "account": _ACCOUNT, "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": _REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {"version": "0", "bucket": {"name": bucket}, "object": obj,
                   "request-id": uuid.uuid4().hex[:16].upper(), "requester": _ACCOUNT,
                   "source-ip-address": "127.0.0.1", "reason": "PutObject"},
    }


def stage_map_concurrency(stage_file: Path = REPO / "infra" / "stages" / "dev.toml") -> int:
    """The stage's Distributed Map MaxConcurrency (``batch_map_concurrency``), as infra reads it."""
    if stage_file.is_file():
        value = tomllib.loads(stage_file.read_text(encoding="utf-8")).get("batch_map_concurrency")
        if isinstance(value, int):
            return value
    return DEFAULT_MAP_CONCURRENCY


def sizing_for(model: str, *, map_concurrency: int | None = None, task: str | None = None) -> BatchSizing:
    """The model's batch sizing as infra deploys it (catalog entry + committed bench, or the task's default)."""
    from functions.contract.catalog import LambdaDeploy, load_catalog

    concurrency = map_concurrency or stage_map_concurrency()
    entry = load_catalog(REPO / "catalog.toml").get(model)
    if entry is None:
        rate = default_rate(task or "sentence-embeddings")
        return batch_sizing(rate, memory_mb=2048, timeout_s=300, map_concurrency=concurrency)
    deploy = entry.deploy
    memory = (deploy.batch_memory_mb or deploy.memory_mb) if isinstance(deploy, LambdaDeploy) else 2048
    architecture = deploy.architecture if isinstance(deploy, LambdaDeploy) else "x86_64"
    return batch_sizing(read_batch_rate(BENCHMARKS, model, entry.task), memory_mb=memory,
                        timeout_s=deploy.batch_timeout_s, map_concurrency=concurrency, architecture=architecture)


@dataclass
class ChunkedRun:
    """What a local run of the state machine's plan did."""

    plan: dict[str, Any]
    summary: dict[str, Any] | None
    processed: int = 0  # chunks run
    skipped: int = 0  # chunks whose commit existed (a resumed run)
    attempts: int = 0  # chunk calls, retries included
    seconds: float = 0.0
    worker_peak_kb: int = 0  # the largest VmHWM of the pool's processes
    results: list[dict[str, Any]] = field(default_factory=list)


def _worker_setup(registry_factory: Callable[[], Any] | None) -> None:
    """In each pool process: the model registry the handler uses (the real one, from MAAS_MODELS, by default)."""
    if registry_factory is not None:
        install_registry(registry_factory)


def install_registry(registry_factory: Callable[[], Any]) -> None:
    """Serve ``registry_factory()``'s models from the handlers in this process (tests: a fake pipeline)."""
    import functions.inference.registry as registry_module

    registry = registry_factory()
    registry_module.get_registry = lambda: registry  # type: ignore[assignment]
    import functions.handlers.chunk as chunk_module
    import functions.handlers.s3 as s3_module

    chunk_module.get_registry = registry_module.get_registry  # type: ignore[attr-defined]
    s3_module.get_registry = registry_module.get_registry  # type: ignore[attr-defined]


def _run_chunk(batch: dict[str, Any]) -> dict[str, Any]:
    """One Map batch in a pool process: the handler's answer and this process's peak memory."""
    from functions.handlers.chunk import handler

    result = handler(batch, local_context())
    return {**result, "vmhwm_kb": _vmhwm_kb()}


def _vmhwm_kb() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_chunked(
    bucket: str, key: str, *, execution: str | None = None, workers: int = 2, attempts: int = 3,
    registry_factory: Callable[[], Any] | None = None,
) -> ChunkedRun:
    """The state machine's plan for ``s3://bucket/key`` with the local S3 the environment points at."""
    from functions.handlers import chunk as chunk_handler

    started = time.perf_counter()
    s3 = boto3.client("s3")
    head = s3.head_object(Bucket=bucket, Key=key)
    event = object_created_event(bucket, key, etag=head["ETag"], size=head["ContentLength"],
                                 version_id=head.get("VersionId"))
    execution = execution or f"local:{uuid.uuid4()}"
    plan = chunk_handler.handler(plan_step(event, execution), local_context())
    report = ChunkedRun(plan=plan, summary=None)
    if plan["route"] == "chunks":
        body = s3.get_object(Bucket=plan["bucket"], Key=plan["manifest_key"])["Body"]
        items = [json.loads(line) for line in body.iter_lines() if line.strip()]  # the Map's ItemReader (JSONL)
        batches = [chunk_batch(plan["run"], [item]) for item in items]  # the ItemBatcher: one chunk per batch
        _map(batches, report, workers=workers, attempts=attempts, registry_factory=registry_factory)
        chunk_handler.handler(merge_step(plan["run"]), local_context())
    _, summary_key = _summary_key(plan, key)
    if summary_key:
        found = s3.get_object(Bucket=bucket, Key=summary_key)
        report.summary = json.loads(found["Body"].read())
    report.seconds = time.perf_counter() - started
    return report


def _summary_key(plan: dict[str, Any], key: str) -> tuple[str, str | None]:
    run = plan.get("run")
    if run:
        return run["output_key"], run["summary_key"]
    from functions.batch.readers import detect_format, output_name
    from functions.settings import get_settings

    settings = get_settings()
    relative = key[len(settings.input_prefix):] if key.startswith(settings.input_prefix) else None
    fmt = detect_format(key)
    if relative is None:
        return "", None
    output = settings.output_prefix + output_name(relative, fmt) if fmt is not None else ""
    return output, f"{settings.output_prefix}{relative}.summary.json"


def _map(
    batches: list[dict[str, Any]], report: ChunkedRun, *, workers: int, attempts: int,
    registry_factory: Callable[[], Any] | None,
) -> None:
    """The Distributed Map: every batch in the pool, at most ``workers`` at once, each retried on failure."""
    context = get_context("spawn")  # fresh processes, as Lambda's environments are (no forked moto threads)
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=context, initializer=_worker_setup,
                             initargs=(registry_factory,)) as pool:
        pending: dict[Future[dict[str, Any]], tuple[dict[str, Any], int]] = {
            pool.submit(_run_chunk, batch): (batch, 1) for batch in batches
        }
        while pending:
            future = next(iter(_first_done(pending)))
            batch, tries = pending.pop(future)
            report.attempts += 1
            try:
                result = future.result()
            except BrokenProcessPool:
                raise  # a worker died (killed): the run stops; running it again resumes it
            except Exception:
                if tries >= attempts:
                    raise
                pending[pool.submit(_run_chunk, batch)] = (batch, tries + 1)
                continue
            report.worker_peak_kb = max(report.worker_peak_kb, int(result.pop("vmhwm_kb", 0)))
            for chunk in result["chunks"]:
                report.results.append(chunk)
                if chunk["skipped"]:
                    report.skipped += 1
                else:
                    report.processed += 1


def _first_done(pending: dict[Future[dict[str, Any]], Any]) -> Iterator[Future[dict[str, Any]]]:
    from concurrent.futures import FIRST_COMPLETED, wait

    done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
    return iter(done)


@dataclass
class LocalBatch:
    route: str
    key: str
    summary: dict[str, Any]
    output_path: Path | None
    chunked: ChunkedRun | None = None


def run_batch(
    input_path: Path, *, model: str, route: str = "auto", workers: int = 2, out: Path | None = None,
    bucket: str = LOCAL_BUCKET, endpoint_url: str | None = None, sizing: BatchSizing | None = None,
) -> LocalBatch:
    """Upload ``input_path`` as ``<input prefix><name>`` and run it as deployed: direct or chunked by size."""
    from functions.handlers import s3 as s3_handler
    from functions.settings import get_settings

    sizing = sizing or sizing_for(model)
    os.environ.setdefault("MAAS_CHUNK_BYTES", str(sizing.chunk_bytes))
    get_settings.cache_clear()
    settings = get_settings()
    per_model_prefix = settings.input_prefix.rstrip("/").rsplit("/", 1)[-1] == model
    relative = input_path.name if per_model_prefix else f"{model}/{input_path.name}"
    key = settings.input_prefix + relative
    size = input_path.stat().st_size
    chosen = route if route != "auto" else ("direct" if size <= sizing.route_threshold_bytes else "chunks")
    server = moto_server() if endpoint_url is None else nullcontext(endpoint_url)
    with server as url, aws_endpoint(url):
        s3 = boto3.client("s3")
        if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
            s3.create_bucket(Bucket=bucket)
        s3.upload_file(str(input_path), bucket, key)
        chunked = None
        if chosen == "direct":
            head = s3.head_object(Bucket=bucket, Key=key)
            event = object_created_event(bucket, key, etag=head["ETag"], size=head["ContentLength"],
                                         version_id=head.get("VersionId"))
            s3_handler.handler(event, local_context())
            _, summary_key = _summary_key({}, key)
            summary = json.loads(s3.get_object(Bucket=bucket, Key=summary_key or "")["Body"].read())
        else:
            chunked = run_chunked(bucket, key, workers=workers)
            summary = chunked.summary or {"status": chunked.plan["route"]}
        output = (summary.get("output") or {}).get("key")
        if out is not None and output:
            s3.download_file(bucket, output, str(out))
    return LocalBatch(route=chosen, key=key, summary=summary, output_path=out if output else None, chunked=chunked)


@contextmanager
def local_s3(endpoint_url: str | None = None) -> Iterator[str]:
    """A local S3 endpoint for the duration (moto's server unless one is given), with the environment pointed at it."""
    server = moto_server() if endpoint_url is None else nullcontext(endpoint_url)
    with server as url, aws_endpoint(url):
        yield url


def model_of_key(key: str) -> str | None:
    """The catalog model whose input prefix holds ``key`` (as EventBridge's per-model rules route it)."""
    from functions.contract.catalog import load_catalog

    for name, entry in load_catalog(REPO / "catalog.toml").items():
        if key.startswith(entry.input_prefix):
            return name
    return None


def plan_report(
    source: str, *, model: str | None = None, map_concurrency: int | None = None, endpoint_url: str | None = None,
) -> list[str]:
    """``maas batch --plan``: what the deployed stage does with ``s3://bucket/key`` (its size, from HeadObject) or
    a local file (its size, and its exact records and chunks from the plan step's own pass)."""
    from functions.batch.chunks import plan_chunks
    from functions.batch.readers import InputFormat, detect_format
    from functions.contract.batch_plan import describe, estimate_job

    records = chunks = None
    if source.startswith("s3://"):
        bucket, _, key = source[len("s3://"):].partition("/")
        if not bucket or not key:
            raise ValueError(f"{source}: expected s3://<bucket>/<key>")
        name = model or model_of_key(key)
        if name is None:
            raise ValueError(f"{source}: no catalog model's input prefix holds it; pass --model")
        try:
            head = boto3.client("s3", endpoint_url=endpoint_url).head_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise ValueError(f"{source}: {exc}") from exc
        size = int(head["ContentLength"])
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{source}: no such file (give a local file or s3://<bucket>/<key>)")
        size, key, name = path.stat().st_size, path.name, model
    if name is None:
        raise ValueError(f"{source}: no catalog model's input prefix holds it; pass --model")
    sizing = sizing_for(name, map_concurrency=map_concurrency)
    fmt = detect_format(key)
    if not source.startswith("s3://") and fmt in (InputFormat.JSONL, InputFormat.CSV):
        from functions.contract.catalog import load_catalog

        entry = load_catalog(REPO / "catalog.toml").get(name)
        window = (entry.limits.max_batch if entry else 32) * 8
        with Path(source).open("rb") as handle:
            found = plan_chunks(iter(lambda: handle.read(1 << 20), b""), csv=fmt is InputFormat.CSV, window=window,
                                max_line_bytes=1 << 20, chunk_bytes=sizing.chunk_bytes)
        records, chunks = found.records, len(found.chunks)
    estimate = estimate_job(size, sizing, records=records)
    lines = [f"object      {source} -> model {name}", *describe(estimate, sizing)]
    if chunks is not None and estimate.route == "state-machine":
        lines.append(f"(the plan step's own pass over this file: {records:,} records in {chunks:,} chunks)")
    return lines
