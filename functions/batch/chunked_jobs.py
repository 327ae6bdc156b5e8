"""S3 jobs too large for one invocation, as Step Functions Distributed Map runs them: plan → chunks → merge.

Each step is one call of ``functions.handlers.chunk`` (deployed: a Lambda function the state machine invokes;
locally: ``maas_dev.batch_local`` calls the same handler from a process pool):

1. **plan** (the EventBridge ``Object Created`` event): the job's identity as the direct path takes it, then one
   pass over the announced version cutting it into chunks (:mod:`functions.batch.chunks`); writes the chunk
   list (JSON Lines: the Map's ItemReader reads it) and ``plan.json``, which claims the run for this execution
   with a conditional write. What cannot be cut (an image, an unsupported type, an object over the limit, an
   unknown model) runs or is rejected by the direct path's own code, inline.
2. **chunk** (one per Map item; ``BatchInput`` holds the run): a ranged GET of the chunk, through the direct
   path's record code (``S3JobRunner.records`` / ``write_records``: the same windows, error lines, output lines),
   into ``parts/<index>.jsonl``; then ``parts/<index>.json`` (its counts) commits it. A chunk whose commit
   exists is skipped: a retried or redriven execution redoes only what was not committed, and a chunk's bytes
   depend only on the object and the plan, so the result is the same. A record's problem is its error line;
   anything else raises, so Step Functions retries the chunk.
3. **merge**: the parts, in order, into the output (S3 copies them: :mod:`functions.batch.concat`), the summary
   (counts summed over the chunks), the job's announcement, then the run's files are deleted.

A failed execution (after its retries) is reported by EventBridge's execution status event, which calls the
handler once more: the summary says ``failed``, why, and how to redrive it; the chunk outputs stay for the
redrive. Everything lives below ``<output prefix>.runs/<run id>/`` (never under the input prefix).
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from botocore.exceptions import ClientError

from functions.batch.chunks import Chunk, CsvHeader, plan_chunks
from functions.batch.concat import concatenate
from functions.batch.exceptions import StorageError
from functions.batch.notify import announce
from functions.batch.readers import InputFormat, csv_header, detect_format, image_limit_of, input_budget
from functions.batch.s3_events import S3Job, is_object_created
from functions.batch.s3_jobs import S3JobRunner, Tally
from functions.batch.s3io import StreamingUpload, is_precondition_failed, read_json
from functions.batch.types import ErrorBody, JobSummary, RunInfo
from functions.contract.batch_plan import MAX_CHUNKS
from functions.contract.deployment import JOB_TIMEOUT_S
from functions.errors import MaasError, PayloadTooLargeError
from functions.telemetry import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from functions.inference.registry import ModelRegistry
    from functions.settings import Settings

# A run whose plan.json is older than this (and whose execution never finished) may be taken over by a new one:
# the state machine's own timeout has ended that execution by then.
RUN_CLAIM_S = JOB_TIMEOUT_S + 2 * 3600
CHUNK_FORMATS = (InputFormat.JSONL, InputFormat.CSV)


class RunRef(TypedDict):
    """What the chunk and merge steps need of a run (the Map's BatchInput carries it to every chunk)."""

    job: dict[str, Any]  # the S3Job's fields
    format: str
    prefix: str  # <output prefix>.runs/<run id>/
    execution: str
    started_at: str
    chunks: int
    chunk_bytes: int
    header: CsvHeader | None
    output_key: str
    summary_key: str


class PlanResult(TypedDict):
    route: Literal["chunks", "direct", "done", "duplicate", "superseded", "ignored"]
    bucket: str
    manifest_key: str
    results_prefix: str
    chunks: int
    run: RunRef | None
    status: NotRequired[str]


class ChunkResult(TypedDict):
    index: int
    skipped: bool
    superseded: bool
    counts: dict[str, int]


def plan_step(event: dict[str, Any], execution: str) -> dict[str, Any]:
    """The plan step's input, as the state machine's ``Plan`` task builds it (``event.$: $``, the execution id)."""
    return {"step": "plan", "event": event, "execution": execution}


def chunk_batch(run: RunRef, items: list[Chunk]) -> dict[str, Any]:
    """A chunk step's input: the Distributed Map's ItemBatcher envelope, the run in ``BatchInput``."""
    return {"BatchInput": {"step": "chunk", "run": run}, "Items": items}


def merge_step(run: RunRef) -> dict[str, Any]:
    """The merge step's input, as the ``Merge`` task builds it."""
    return {"step": "merge", "run": run}


def run_id(job: S3Job) -> str:
    """One run per object version: the same object announced twice (or retried) shares it."""
    return hashlib.sha256(f"{job.bucket}/{job.key}#{job.version_id or job.etag}".encode()).hexdigest()[:32]


class ChunkedJobRunner:
    def __init__(self, settings: Settings, registry: ModelRegistry, s3: S3Client, dynamodb: Any = None) -> None:
        self.settings, self.registry, self.s3 = settings, registry, s3
        self.jobs = S3JobRunner(settings, registry, s3, dynamodb)

    # --- 1. plan ---------------------------------------------------------------------------------------
    def plan(self, event: dict[str, Any], execution: str, context: Any = None) -> PlanResult:
        """Cut the announced object into chunks, or run what cannot be cut the direct way."""
        (job,) = self.jobs.jobs_in(event) if is_object_created(event) else [None]
        if job is None:
            return _result("ignored", "", None)
        fmt = detect_format(job.name)
        output_key, summary_key = self.jobs.keys(job, fmt)
        if self.jobs.done_before(job, summary_key) is not None:
            return _result("done", job.bucket, None)
        if fmt not in CHUNK_FORMATS or output_key is None or self.jobs.refusal(job, fmt) is not None \
                or job.model not in self.registry.names():
            summary = self.jobs.run(job, context)  # images, rejections: the direct path's own code
            return {**_result("direct", job.bucket, None), "status": summary["status"]}
        prefix = f"{self.settings.runs_prefix}{run_id(job)}/"
        claimed = self._read_json(job.bucket, prefix + "plan.json")
        if claimed is not None and claimed[0]["execution"] == execution:  # this execution's retry: same plan
            return self._planned(job, claimed[0]["run"])
        if claimed is not None and not self._stale(claimed[0], job, summary_key):
            logger.info("another execution runs this object", extra={"key": job.key, "run": claimed[0]["execution"]})
            return _result("duplicate", job.bucket, None)
        if job.size > MAX_CHUNKS * self.settings.chunk_bytes:  # chunks any larger would outrun the function
            run: RunRef | MaasError | None = PayloadTooLargeError(
                f"{job.key} is {job.size:,} bytes; {job.model} takes at most {MAX_CHUNKS:,} chunks of "
                f"{self.settings.chunk_bytes:,} bytes ({MAX_CHUNKS * self.settings.chunk_bytes:,} bytes). Split it")
        else:
            run = self._scan(job, fmt, prefix, execution, output_key, summary_key)
        if run is None:
            return _result("superseded", job.bucket, None)
        if isinstance(run, MaasError):  # too large, or an unreadable CSV header: the object is rejected as a whole
            self.jobs.finish(job, summary_key, self.jobs.summary(job, None, time.perf_counter(), _now(), None,
                                                                 Tally()), run)
            return {**_result("direct", job.bucket, None), "status": "rejected"}
        body = json.dumps({"execution": execution, "run": run, "planned_at": time.time()}).encode()
        condition = {"IfMatch": claimed[1]} if claimed is not None else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=job.bucket, Key=self.jobs.guard(prefix + "plan.json"), Body=body,
                               ContentType="application/json", **condition)  # type: ignore[arg-type]
        except ClientError as exc:
            if not is_precondition_failed(exc):
                raise
            return _result("duplicate", job.bucket, None)  # another execution claimed it first
        logger.info("chunked job planned", extra={"key": job.key, "chunks": run["chunks"], "execution": execution})
        metrics.add_metric(name="BatchJobsPlanned", unit=MetricUnit.Count, value=1)
        return self._planned(job, run)

    def _scan(
        self, job: S3Job, fmt: InputFormat, prefix: str, execution: str, output_key: str, summary_key: str
    ) -> RunRef | MaasError | None:
        pipeline = self.registry.get(job.model)
        body = self.jobs.open(job)
        if body is None:
            return None
        chunk_bytes = self.settings.chunk_bytes
        plan = plan_chunks(body, csv=fmt is InputFormat.CSV, max_line_bytes=self.settings.max_line_bytes,
                           window=pipeline.limits.max_batch * self.settings.window_batches, chunk_bytes=chunk_bytes)
        if plan.header is not None:
            try:
                self._header(job, plan.header)
            except MaasError as exc:
                return exc
        manifest = StreamingUpload(self.s3, job.bucket, self.jobs.guard(prefix + "chunks.jsonl"),
                                   part_bytes=self.settings.output_part_bytes)
        manifest.write(b"".join(json.dumps(chunk).encode() + b"\n" for chunk in plan.chunks))
        manifest.commit()
        return RunRef(job=asdict(job), format=fmt.value, prefix=prefix, execution=execution, started_at=_now(),
                      chunks=len(plan.chunks), chunk_bytes=chunk_bytes, header=plan.header, output_key=output_key,
                      summary_key=summary_key)

    def _planned(self, job: S3Job, run: RunRef) -> PlanResult:
        return PlanResult(route="chunks", bucket=job.bucket, manifest_key=run["prefix"] + "chunks.jsonl",
                          results_prefix=run["prefix"] + "map", chunks=run["chunks"], run=run)

    def _stale(self, claim: dict[str, Any], job: S3Job, summary_key: str) -> bool:
        """A claim a new execution may take over: its run failed, or its execution must have ended."""
        found = self._read_json(job.bucket, summary_key)
        failed = found is not None and found[0].get("status") == "failed" and \
            found[0].get("input", {}).get("etag") == job.etag
        return failed or time.time() - float(claim.get("planned_at", 0)) > RUN_CLAIM_S

    def _header(self, job: S3Job, header: CsvHeader) -> list[str]:
        body = self.jobs.open(job, (header["start"], header["end"])) if header["end"] > header["start"] else iter(())
        raw = b"".join(body or ())
        return csv_header(raw, header["line"], self.settings.max_line_bytes)

    # --- 2. chunks -------------------------------------------------------------------------------------
    def chunk(self, run: RunRef, chunk: Chunk, context: Any = None) -> ChunkResult:
        """Run one chunk through the record code into its part; skip it when its commit exists."""
        job = S3Job(**run["job"])
        part, marker = _part_keys(run, chunk["index"])
        committed = self._read_json(job.bucket, marker)
        if committed is not None and (committed[0]["start"], committed[0]["end"]) == (chunk["start"], chunk["end"]):
            return ChunkResult(index=chunk["index"], skipped=True, superseded=False, counts=committed[0]["counts"])
        self.jobs.input_budget = input_budget(self.settings, context)
        pipeline = self.registry.get(job.model)
        fmt = InputFormat(run["format"])
        byte_range = (chunk["start"], chunk["end"])
        body = self.jobs.open(job, byte_range) if chunk["end"] > chunk["start"] else iter(())
        if body is None:  # the object was replaced or deleted since its event: the merge says superseded
            return ChunkResult(index=chunk["index"], skipped=False, superseded=True, counts={})
        header = self._header(job, run["header"]) if run["header"] and chunk["index"] else None
        records = self.jobs.records(job, fmt, body, image_limit_of(pipeline), first_line=chunk["first_line"],
                                    header=header, rows_before=chunk["rows_before"])
        upload = StreamingUpload(self.s3, job.bucket, self.jobs.guard(part), part_bytes=self.settings.output_part_bytes)
        tally = Tally()
        try:
            self.jobs.write_records(pipeline, job, records, upload, tally)
            upload.commit()
        except BaseException:
            upload.abort()
            raise
        counts = {name: tally.counts[name] for name in ("total", "succeeded", "failed")}
        commit = {"index": chunk["index"], "start": chunk["start"], "end": chunk["end"], "bytes": upload.bytes_written,
                  "counts": counts, "errors_by_code": dict(tally.errors), "input_tokens": tally.stats.input_tokens,
                  "predict_calls": tally.stats.predict_calls, "model_version": pipeline.manifest.version}
        self.s3.put_object(Bucket=job.bucket, Key=self.jobs.guard(marker), Body=json.dumps(commit).encode(),
                           ContentType="application/json")
        metrics.add_metric(name="BatchChunksCompleted", unit=MetricUnit.Count, value=1)
        return ChunkResult(index=chunk["index"], skipped=False, superseded=False, counts=counts)

    # --- 3. merge --------------------------------------------------------------------------------------
    def merge(self, run: RunRef) -> JobSummary:
        """The parts in order into the output, the summary, the announcement; then the run's files go."""
        job = S3Job(**run["job"])
        previous = self.jobs.done_before(job, run["summary_key"])
        if previous is not None:  # a retried merge after the summary was written
            self._clean(job.bucket, run["prefix"])
            return previous
        pipeline = self.registry.get(job.model)
        summary = self.jobs.summary(job, pipeline, time.perf_counter(), run["started_at"], run["output_key"], Tally())
        if not self.jobs.still_current(job):
            summary["status"], summary["output"] = "superseded", None
            logger.info("object replaced while processing; output not written", extra={"key": job.key})
            self._clean(job.bucket, run["prefix"])
            return summary
        with ThreadPoolExecutor(max_workers=8) as pool:
            commits = list(pool.map(lambda i: self._read_json(job.bucket, _part_keys(run, i)[1]), range(run["chunks"])))
        missing = [i for i, found in enumerate(commits) if found is None]
        if missing:
            raise StorageError(f"chunks {missing[:10]} of s3://{job.bucket}/{job.key} have no committed output; "
                               "the execution fails here and a redrive runs just those chunks")
        done = [found[0] for found in commits if found is not None]
        sources = [(_part_keys(run, c["index"])[0], int(c["bytes"])) for c in done]
        concatenate(self.s3, job.bucket, sources, self.jobs.guard(run["output_key"]))
        tally = Tally()
        for c in done:
            tally.counts.update(c["counts"])
            tally.errors.update(c["errors_by_code"])
            tally.stats.input_tokens += c["input_tokens"]
            tally.stats.runs += c["predict_calls"]
        summary = self.jobs.summary(job, pipeline, time.perf_counter(), run["started_at"], run["output_key"], tally)
        summary["duration_s"] = round(time.time() - datetime.fromisoformat(run["started_at"]).timestamp(), 3)
        route: Literal["state-machine", "local"] = "local" if run["execution"].startswith("local:") else "state-machine"
        summary["run"] = RunInfo(route=route, execution=run["execution"], chunks=run["chunks"],
                                 chunk_bytes=run["chunk_bytes"])
        summary = self.jobs.finish(job, run["summary_key"], summary, None)
        self._clean(job.bucket, run["prefix"])
        return summary

    # --- a failed execution ---------------------------------------------------------------------------------
    def failed(self, event: dict[str, Any]) -> JobSummary | None:
        """EventBridge's ``Step Functions Execution Status Change`` for a failed, timed-out or aborted execution."""
        detail = event.get("detail") or {}
        arn, status = str(detail.get("executionArn", "")), str(detail.get("status", ""))
        try:
            started = json.loads(detail.get("input") or "{}")
        except json.JSONDecodeError:
            started = {}
        (job,) = self.jobs.jobs_in(started) if is_object_created(started) else [None]
        if job is None:
            logger.warning("a failed execution without an S3 object; nothing to report", extra={"execution": arn})
            return None
        _, summary_key = self.jobs.keys(job, detect_format(job.name))
        if self.jobs.done_before(job, summary_key) is not None:
            return None
        redrive = f"aws stepfunctions redrive-execution --execution-arn {arn}"
        summary = self.jobs.summary(job, None, time.perf_counter(), _now(), None, Tally())
        summary["status"], summary["output"] = "failed", None
        cause = str(detail.get("cause") or "")[:800]
        summary["error"] = ErrorBody(code="execution_failed", message=(
            f"the execution ended {status}: {detail.get('error') or 'no error name'}{': ' + cause if cause else ''}. "
            f"Chunks that completed are kept for 14 days; redrive it to run only the rest: {redrive}"))
        summary["run"] = RunInfo(route="state-machine", execution=arn, chunks=0, chunk_bytes=0, redrive=redrive)
        self.s3.put_object(Bucket=job.bucket, Key=self.jobs.guard(summary_key), ContentType="application/json",
                           Body=json.dumps(summary, indent=1).encode())
        metrics.add_metric(name="BatchJobsFailed", unit=MetricUnit.Count, value=1)
        logger.error("batch job failed", extra={"key": job.key, "execution": arn, "status": status})
        announce(self.settings, summary, summary_key)
        return summary

    # --- helpers -------------------------------------------------------------------------------------------
    def _read_json(self, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
        return read_json(self.s3, bucket, key)

    def _clean(self, bucket: str, prefix: str) -> None:
        """Delete the run's files (plan, chunk list, parts, the Map's results)."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=self.jobs.guard(prefix))
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})  # type: ignore[typeddict-item]


def _part_keys(run: RunRef, index: int) -> tuple[str, str]:
    return f"{run['prefix']}parts/{index:06d}.jsonl", f"{run['prefix']}parts/{index:06d}.json"


def _result(route: str, bucket: str, run: RunRef | None) -> PlanResult:
    return PlanResult(route=route, bucket=bucket, manifest_key="", results_prefix="", chunks=0,  # type: ignore[typeddict-item]
                      run=run)


def _now() -> str:
    return datetime.now(UTC).isoformat()
