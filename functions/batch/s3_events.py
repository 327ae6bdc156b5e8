"""Which object an S3 event asks a job for: the two shapes it comes in, and what is not ours to run.

- an S3 notification (``Records``: a bucket notifying a function or a queue; local runs, ``events/s3_put.json``);
- EventBridge's ``Object Created`` event (the deployed route: the batch bucket's EventBridge notifications,
  ``events/eventbridge_s3_object_created.json``).

Either way the key is URL-encoded, and only object creations under the input prefix (and in the batch bucket,
when set) are jobs; anything else is logged (``ignoring S3 event``, with the reason) and skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.utilities.data_classes import S3Event, S3EventBridgeNotificationEvent
from aws_lambda_powertools.utilities.data_classes.s3_event import S3EventRecord

from functions.batch.types import ObjectInfo
from functions.telemetry import logger

if TYPE_CHECKING:
    from functions.inference.registry import ModelRegistry
    from functions.settings import Settings


@dataclass(frozen=True)
class S3Job:
    """One object to process, with the identity the event announced."""

    bucket: str
    key: str
    model: str
    folder: str  # the model's input folder: where the object and any images it names live
    relative: str  # the key below the input prefix; outputs mirror it below the output prefix
    etag: str
    version_id: str | None
    sequencer: str
    size: int

    @property
    def name(self) -> str:
        return self.key[len(self.folder):]

    def identity(self) -> dict[str, str]:
        return {"bucket": self.bucket, "key": self.key, "version": self.version_id or self.etag}

    def info(self) -> ObjectInfo:
        return ObjectInfo(bucket=self.bucket, key=self.key, etag=self.etag, version_id=self.version_id,
                          sequencer=self.sequencer, size=self.size)


def is_object_created(event: dict[str, Any]) -> bool:
    """Whether ``event`` is EventBridge's ``Object Created`` event from S3 (the batch bucket's notifications)."""
    return event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created"


class JobFinder:
    """Events to jobs, for one function's settings and models."""

    def __init__(self, settings: Settings, registry: ModelRegistry) -> None:
        self.settings, self.registry = settings, registry

    def jobs_in(self, event: dict[str, Any]) -> list[S3Job | None]:
        """The job each object of ``event`` asks for (None, logged, for one that is not ours)."""
        if is_object_created(event):
            return [self.job_from_object_created(event)]
        records = list(S3Event(event).records) if event.get("Records") else []  # s3:TestEvent has none
        return [self.job_for(record) for record in records]

    def job_for(self, record: S3EventRecord) -> S3Job | None:
        """The job an S3 notification record asks for, or None (logged) when it is not ours to run."""
        obj = record.s3.get_object
        created = record.get("eventSource") == "aws:s3" and record.event_name.startswith("ObjectCreated:")
        return self._job(
            bucket=record.s3.bucket.name, key=unquote_plus(obj.key), created=created,
            event_name=str(record.get("eventName")), etag=obj.etag, version_id=obj.version_id,
            sequencer=obj.get("sequencer") or "", size=int(obj.get("size") or 0),
        )

    def job_from_object_created(self, event: dict[str, Any]) -> S3Job | None:
        """The job an EventBridge ``Object Created`` event asks for (its key is URL-encoded, as in notifications)."""
        detail = S3EventBridgeNotificationEvent(event).detail
        obj = detail.object
        return self._job(
            bucket=detail.bucket.name, key=obj.key, created=True, event_name=str(event.get("detail-type")),
            etag=obj.etag, version_id=obj.get("version-id"), sequencer=obj.get("sequencer") or "",
            size=int(obj.size or 0),
        )

    def _job(
        self, *, bucket: str, key: str, created: bool, event_name: str, etag: str, version_id: str | None,
        sequencer: str, size: int,
    ) -> S3Job | None:
        settings = self.settings
        skip = None
        if not created:
            skip = f"event {event_name!r} is not an object creation"
        elif settings.batch_bucket and bucket != settings.batch_bucket:
            skip = f"bucket {bucket!r} is not the batch bucket {settings.batch_bucket!r}"
        elif not key.startswith(settings.input_prefix):
            skip = f"key is outside the input prefix {settings.input_prefix!r}"
        relative = key[len(settings.input_prefix):]
        model, folder = self._model_folder(relative)
        if skip is None and (not model or key == folder or key.endswith("/")):
            skip = f"key must look like {folder if model else settings.input_prefix + '<model>/'}<name>"
        if skip is not None:
            logger.warning("ignoring S3 event", extra={"bucket": bucket, "key": key, "reason": skip})
            return None
        return S3Job(bucket=bucket, key=key, model=model, folder=folder, relative=relative, etag=etag.strip('"'),
                     version_id=version_id or None, sequencer=sequencer, size=size)

    def _model_folder(self, relative: str) -> tuple[str, str]:
        """The model a key belongs to, and that model's input folder.

        Two layouts: one input prefix per function, ending in the model's folder (``inputs/<model>/``,
        as infra deploys it), or one shared prefix (``inputs/``) with the model as the first folder.
        """
        prefix = self.settings.input_prefix
        own = prefix.rstrip("/").rsplit("/", 1)[-1]
        if own in self.registry.names():
            return own, prefix
        model, _, _ = relative.partition("/")
        return (model, f"{prefix}{model}/") if "/" in relative else ("", prefix)

