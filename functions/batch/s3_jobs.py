"""S3 batch jobs: ``<input prefix><model>/<name>`` → ``<output prefix><model>/<name>`` + a summary.

Guarantees, in the order a job meets them:

- Only ``ObjectCreated`` events for keys under the input prefix start a job; anything else is logged
  and skipped. Every key written is checked to lie outside the input prefix (no event loops).
- A job is idempotent on (bucket, key, version or ETag) through Powertools' ``idempotent_function``
  and, beyond the store's TTL, through the summary, which records the input's identity.
- The job reads exactly the object version the event announced (``VersionId`` or ``If-Match``);
  when the object has since been replaced, the stale event writes nothing (the newer event will).
- One output line per input line, in order, each with its id; a line that fails gets an error line.
- Input is held a window at a time, and a window never holds more than a quarter of the function's memory
  (lines, and the images a manifest names, each within the model's own ``max_image_bytes``), whatever the
  object's length.
- A fault that is not the input's (S3 down, a bug) aborts the upload and raises: Lambda retries the
  event and, after its retries, sends it to the on-failure destination — never a partial output.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyPersistenceLayerError
from botocore.exceptions import BotoCoreError, ClientError

from functions.batch.exceptions import BatchConfigError, MalformedRecordError, StorageError
from functions.batch.idempotency import persistence_layer
from functions.batch.notify import announce
from functions.batch.readers import (
    InputFormat,
    InputRecord,
    detect_format,
    image_limit_of,
    image_too_large,
    input_budget,
    iter_lines,
    output_name,
    read_csv,
    read_image_object,
    read_jsonl,
    supported_suffixes,
)
from functions.batch.s3_events import JobFinder, S3Job, is_object_created
from functions.batch.s3io import StreamingUpload, is_missing, is_precondition_failed, read_json
from functions.batch.types import ErrorBody, ErrorLine, JobSummary, ResultLine, encode_line, error_line
from functions.errors import MaasError, ModelNotFoundError, PayloadTooLargeError
from functions.inference.batching import RunStats, WorkItem, run_items
from functions.inference.pipelines.base import Pipeline
from functions.telemetry import MetricUnit, logger, metrics

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from functions.inference.registry import ModelRegistry
    from functions.settings import Settings

__all__ = ["S3Job", "S3JobRunner", "Tally", "is_object_created"]  # the first and last live in s3_events

_READ_CHUNK = 256 * 1024


@dataclass
class Tally:
    """What a job (or one chunk of it) did: record counts, errors by code, model runs and tokens."""

    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    stats: RunStats = field(default_factory=RunStats)


class S3JobRunner:
    def __init__(self, settings: Settings, registry: ModelRegistry, s3: S3Client, dynamodb: Any = None) -> None:
        self.settings, self.registry, self.s3, self.dynamodb = settings, registry, s3, dynamodb
        self.input_budget = input_budget(settings, None)
        self.finder = JobFinder(settings, registry)

    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Run a job for each object an event announces; raise after all ran if any failed.

        Two shapes: an S3 notification (``Records``: the bucket notifying a function or a queue, local runs) and
        EventBridge's ``Object Created`` event (the deployed route, through the batch bucket's EventBridge
        notifications)."""
        jobs: list[dict[str, Any]] = []
        failure: BaseException | None = None
        candidates = self.jobs_in(event)
        metrics.add_metric(name="BatchEventRecords", unit=MetricUnit.Count, value=len(candidates))
        for job in candidates:
            if job is None:
                metrics.add_metric(name="BatchEventsIgnored", unit=MetricUnit.Count, value=1)
                continue
            try:
                summary = self.run(job, context)
            except (ClientError, BotoCoreError, IdempotencyPersistenceLayerError) as exc:
                logger.exception("batch job failed; the event will be retried", extra={"key": job.key})
                error = StorageError(
                    f"s3://{job.bucket}/{job.key}: {exc}. Check that the bucket exists and that this function may "
                    "read and write it (locally: point AWS_ENDPOINT_URL_S3 at a moto server, see docs/batch.md)")
                error.__cause__ = exc
                failure = failure or error
                continue
            except Exception as exc:
                logger.exception("batch job failed; the event will be retried", extra={"key": job.key})
                failure = failure or exc
                continue
            jobs.append({"key": job.key, "status": summary["status"], "counts": summary["counts"],
                         "output": summary["output"]})
        if failure is not None:
            raise failure
        return {"jobs": jobs}

    def jobs_in(self, event: dict[str, Any]) -> list[S3Job | None]:
        """The job each object of ``event`` asks for (None, logged, for one that is not ours)."""
        return self.finder.jobs_in(event)

    def job_for(self, record: S3EventRecord) -> S3Job | None:
        """The job an S3 notification record asks for, or None (logged) when it is not ours to run."""
        return self.finder.job_for(record)

    def run(self, job: S3Job, context: Any = None) -> JobSummary:
        self.input_budget = input_budget(self.settings, context)
        store = persistence_layer(self.settings, bucket=job.bucket, s3=self.s3, dynamodb=self.dynamodb)
        if store is None:
            return self._run(job=job.identity(), spec=job)
        config = IdempotencyConfig(expires_after_seconds=self.settings.idempotency_ttl_seconds)
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            config.register_lambda_context(context)
        run = idempotent_function(data_keyword_argument="job", persistence_store=store, config=config,
                                  key_prefix="maas-s3-job")(self._run)
        summary: JobSummary = run(job=job.identity(), spec=job)
        return summary

    def keys(self, job: S3Job, fmt: InputFormat | None) -> tuple[str | None, str]:
        """The job's output key (None for an unsupported type) and its summary key."""
        base = f"{self.settings.output_prefix}{job.relative}"
        output = self.settings.output_prefix + output_name(job.relative, fmt) if fmt is not None else None
        return output, f"{base}.summary.json"

    def _run(self, *, job: dict[str, str], spec: S3Job) -> JobSummary:
        started, started_at = time.perf_counter(), datetime.now(UTC).isoformat()
        fmt = detect_format(spec.name)
        output_key, summary_key = self.keys(spec, fmt)
        previous = self.done_before(spec, summary_key)
        if previous is not None:
            return previous
        summary = self.summary(spec, None, started, started_at, None, Tally())
        try:
            pipeline = self.registry.get(spec.model)
        except ModelNotFoundError as exc:
            return self.finish(spec, summary_key, summary, exc)
        summary["model_version"] = pipeline.manifest.version
        refusal = self.refusal(spec, fmt)
        if refusal is not None or fmt is None or output_key is None:
            return self.finish(spec, summary_key, summary, refusal)
        body = self.open(spec)
        if body is None:
            summary["status"] = "superseded"
            return summary
        upload = StreamingUpload(self.s3, spec.bucket, self.guard(output_key),
                                 part_bytes=self.settings.output_part_bytes)
        tally = Tally()
        try:
            image_limit = image_limit_of(pipeline)
            self.write_records(pipeline, spec, self.records(spec, fmt, body, image_limit), upload, tally)
            if not self.still_current(spec):
                upload.abort()
                summary["status"] = "superseded"
                logger.info("object replaced while processing; output not written", extra={"key": spec.key})
                return summary
            upload.commit()
        except MaasError as exc:  # the object as a whole is unreadable (e.g. its CSV header)
            upload.abort()
            return self.finish(spec, summary_key, summary, exc)
        except BaseException:
            upload.abort()
            raise
        summary = self.summary(spec, pipeline, started, started_at, output_key, tally)
        return self.finish(spec, summary_key, summary, None)

    def done_before(self, job: S3Job, summary_key: str) -> JobSummary | None:
        """The summary of an earlier run of exactly this object version, if one completed (or was rejected)."""
        previous = self._read_summary(job.bucket, summary_key)
        if previous is not None and previous["input"]["etag"] == job.etag and \
                previous["input"]["version_id"] == job.version_id and previous["status"] in ("completed", "rejected"):
            logger.info("object already processed; nothing to do", extra={"key": job.key})
            return previous
        return None

    def refusal(self, job: S3Job, fmt: InputFormat | None) -> MaasError | None:
        """Why this object is rejected as a whole (summary only), or None."""
        if fmt is None:
            return MalformedRecordError(
                f"{job.name}: unsupported input type; name it with one of {', '.join(supported_suffixes())}")
        if job.size > self.settings.max_object_bytes:
            return PayloadTooLargeError(
                f"{job.key} is {job.size} bytes; at most {self.settings.max_object_bytes} per object. Split it")
        return None

    def summary(
        self, job: S3Job, pipeline: Pipeline[Any] | None, started: float, started_at: str, output_key: str | None,
        tally: Tally,
    ) -> JobSummary:
        return JobSummary(
            status="completed", model=job.model, model_version=pipeline.manifest.version if pipeline else None,
            input=job.info(), output={"bucket": job.bucket, "key": output_key} if output_key else None,
            counts={"total": tally.counts["total"], "succeeded": tally.counts["succeeded"],
                    "failed": tally.counts["failed"]},
            errors_by_code=dict(tally.errors), input_tokens=tally.stats.input_tokens,
            predict_calls=tally.stats.predict_calls, started_at=started_at,
            duration_s=round(time.perf_counter() - started, 3), error=None,
        )

    def finish(self, job: S3Job, summary_key: str, summary: JobSummary, error: MaasError | None) -> JobSummary:
        """Write the job's summary (rejected when ``error``), count it, and announce it."""
        if error is not None:
            summary["status"], summary["output"] = "rejected", None
            summary["error"] = ErrorBody(code=error.code, message=error.message)
            logger.warning("batch input rejected", extra={"key": job.key, "error": error.message})
            metrics.add_metric(name="BatchJobsRejected", unit=MetricUnit.Count, value=1)
        else:
            metrics.add_metric(name="BatchJobsCompleted", unit=MetricUnit.Count, value=1)
            metrics.add_metric(name="BatchRecordsSucceeded", unit=MetricUnit.Count,
                               value=summary["counts"]["succeeded"])
            metrics.add_metric(name="BatchRecordsFailed", unit=MetricUnit.Count, value=summary["counts"]["failed"])
            metrics.add_metric(name="BatchJobSeconds", unit=MetricUnit.Seconds, value=summary["duration_s"])
            logger.info("batch job completed", extra={"key": job.key, "counts": summary["counts"]})
        self.s3.put_object(Bucket=job.bucket, Key=self.guard(summary_key), ContentType="application/json",
                           Body=json.dumps(summary, indent=1).encode())
        announce(self.settings, summary, summary_key)
        return summary

    def guard(self, key: str) -> str:
        """Refuse, whatever the configuration, to write where the function would be triggered again."""
        if key.startswith(self.settings.input_prefix):
            raise BatchConfigError(f"refusing to write {key}: it is under the input prefix")
        return key

    def _read_summary(self, bucket: str, key: str) -> JobSummary | None:
        found = read_json(self.s3, bucket, key)
        summary: JobSummary | None = found[0] if found is not None else None
        return summary

    def open(self, job: S3Job, byte_range: tuple[int, int] | None = None) -> Iterator[bytes] | None:
        """The announced version's body (or bytes ``[start, end)`` of it) as chunks, or None when it no longer
        exists or was replaced."""
        extra: dict[str, str] = {}
        if job.version_id:
            extra["VersionId"] = job.version_id
        elif job.etag:
            extra["IfMatch"] = job.etag
        if byte_range is not None:
            extra["Range"] = f"bytes={byte_range[0]}-{byte_range[1] - 1}"
        try:
            found = self.s3.get_object(Bucket=job.bucket, Key=job.key, **extra)  # type: ignore[arg-type]
        except ClientError as exc:
            if is_missing(exc) or is_precondition_failed(exc):
                logger.info("object gone or replaced since the event; skipping", extra={"key": job.key})
                return None
            raise
        chunks: Iterator[bytes] = found["Body"].iter_chunks(_READ_CHUNK)
        return chunks

    def still_current(self, job: S3Job) -> bool:
        """Whether the announced version is still the object's current one."""
        try:
            head = self.s3.head_object(Bucket=job.bucket, Key=job.key)
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise
        if job.version_id:
            return head.get("VersionId") == job.version_id
        return not job.etag or head["ETag"].strip('"') == job.etag

    def records(
        self, job: S3Job, fmt: InputFormat, body: Iterator[bytes], image_limit: int | None, *,
        first_line: int = 1, header: list[str] | None = None, rows_before: int = 0,
    ) -> Iterator[InputRecord]:
        """The object's records, one per line; a chunk of it passes where it starts (see ``read_csv``)."""
        limit = self.settings.max_line_bytes
        if fmt is InputFormat.IMAGE:
            return iter([read_image_object(job.name, body, job.size, image_limit, job.model)])
        lines = iter_lines(body, limit)
        if fmt is InputFormat.CSV:
            return read_csv(lines, text_column=self.settings.csv_text_column, id_column=self.settings.csv_id_column,
                            max_line_bytes=limit, first_line=first_line, header=header, rows_before=rows_before)
        return read_jsonl(lines, max_line_bytes=limit, first_line=first_line)

    def write_records(
        self, pipeline: Pipeline[Any], job: S3Job, records: Iterator[InputRecord], upload: StreamingUpload,
        tally: Tally,
    ) -> None:
        """Records in windows of ``window_batches`` runs, and of at most ``input_budget`` bytes of input; one
        output line per record, in order. The one record path: direct jobs and the chunks of a large one."""
        window_size = pipeline.limits.max_batch * self.settings.window_batches
        image_limit = image_limit_of(pipeline)
        budget = max(self.input_budget, image_limit or 0)
        window: list[InputRecord] = []
        held = 0
        for record in records:
            fetch = record.image_key is not None and record.error is None
            incoming = (image_limit or 0) if fetch else record.size  # an image to fetch: its largest size
            if window and (len(window) >= window_size or held + incoming > budget):
                self._flush(pipeline, job, window, upload, tally)
                window, held = [], 0
            if fetch:
                self._load_image(job, record, image_limit)
            window.append(record)
            held += record.size
        if window:
            self._flush(pipeline, job, window, upload, tally)

    def _flush(
        self, pipeline: Pipeline[Any], job: S3Job, window: list[InputRecord], upload: StreamingUpload, tally: Tally
    ) -> None:
        runnable = [r for r in window if r.error is None and r.item is not None]
        outcomes = iter(run_items(pipeline, [r.item for r in runnable if r.item is not None], tally.stats))
        lines: list[bytes] = []
        for record in window:
            error = record.error
            line: ResultLine | ErrorLine | None = None
            if error is None:
                outcome = next(outcomes)
                error = outcome.error
                if error is None:
                    line = ResultLine(id=record.id if record.id is not None else record.line,
                                      output=outcome.outputs[0])
                    if outcome.truncated and outcome.truncated[0]:
                        line["truncated"] = True
            encoded = encode_line(line) if line is not None else None
            if encoded is None:  # an error, or a result that cannot be written as JSON: the record's own error
                error = error or MalformedRecordError(f"line {record.line}: its result could not be written as JSON")
                encoded = error_line(record.id, record.line, error)
                tally.errors[error.code] += 1
            tally.counts["total"] += 1
            tally.counts["failed" if error is not None else "succeeded"] += 1
            lines.append(encoded)
        upload.write(b"\n".join(lines) + b"\n")

    def _load_image(self, job: S3Job, record: InputRecord, image_limit: int | None) -> None:
        """Fetch a manifest line's image; only objects under this model's input folder may be named, and only
        images within the model's own ``max_image_bytes`` are read (a larger one is refused from its length)."""
        raw = record.image_key or ""
        folder = job.folder
        key = raw if raw.startswith(self.settings.input_prefix) else job.key.rsplit("/", 1)[0] + "/" + raw
        if image_limit is None:
            record.error = MalformedRecordError(
                f"line {record.line}: {job.model} is not an image model; its lines need 'inputs', not 'image'")
            return
        if not key.startswith(folder) or ".." in key.split("/"):
            record.error = MalformedRecordError(f"line {record.line}: image {raw!r} must be under {folder}")
            return
        try:
            found = self.s3.get_object(Bucket=job.bucket, Key=key)
        except ClientError as exc:
            if not is_missing(exc):
                raise
            record.error = MalformedRecordError(f"line {record.line}: image {key!r} does not exist")
            return
        where, stream = f"line {record.line}: the image", found["Body"]
        try:
            if found["ContentLength"] > image_limit:
                record.error = image_too_large(where, found["ContentLength"], image_limit, job.model)
                return
            data = stream.read(image_limit + 1)  # never more than the limit, whatever the length header says
        finally:
            stream.close()
        if len(data) > image_limit:
            record.error = image_too_large(where, len(data), image_limit, job.model)
            return
        record.item = WorkItem([data], record.item.parameters if record.item else None)
        record.size = len(data)
