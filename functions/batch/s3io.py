"""AWS clients for the event paths, and a streaming writer for S3 outputs.

Clients are created once per process (reused across invocations) and honour the standard
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL_SQS`` variables, which is how the local end-to-end path
points the very same code at a moto server. With ``MAAS_EXPECTED_BUCKET_OWNER`` set, every S3 call
that accepts ``ExpectedBucketOwner`` carries it — injected by a botocore hook, so calls made by the
transfer manager or the idempotency store cannot forget it.

Memory bound of an output: ``StreamingUpload`` keeps at most one part (``MAAS_OUTPUT_PART_BYTES``,
8 MiB by default) in memory and uploads each full part as it goes; nothing is written to /tmp.
A job that fails aborts the upload, so a partial output never becomes visible.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef
    from mypy_boto3_sqs import SQSClient

_CONFIG = Config(retries={"max_attempts": 5, "mode": "standard"}, user_agent_extra="maas-batch")
_MISSING = {"NoSuchKey", "NoSuchVersion", "404", "NotFound"}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


@lru_cache(maxsize=4)
def s3_client(expected_owner: str = "") -> S3Client:
    client = boto3.client("s3", config=_CONFIG)
    if expected_owner:
        require_bucket_owner(client, expected_owner)
    return client


@lru_cache(maxsize=1)
def sqs_client() -> SQSClient:
    return boto3.client("sqs", config=_CONFIG)


@lru_cache(maxsize=1)
def dynamodb_client() -> Any:
    return boto3.client("dynamodb", config=_CONFIG)


@lru_cache(maxsize=1)
def events_client() -> Any:
    return boto3.client("events", config=_CONFIG)


def clear_clients() -> None:
    """Forget cached clients (tests and the local runner change endpoints between runs)."""
    s3_client.cache_clear()
    sqs_client.cache_clear()
    dynamodb_client.cache_clear()
    events_client.cache_clear()


def require_bucket_owner(client: Any, account_id: str) -> None:
    """Send ``ExpectedBucketOwner`` on every operation of ``client`` whose input accepts it."""

    def inject(params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.input_shape is not None and "ExpectedBucketOwner" in model.input_shape.members:
            params.setdefault("ExpectedBucketOwner", account_id)

    client.meta.events.register("provide-client-params.s3", inject)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing(exc: ClientError) -> bool:
    return error_code(exc) in _MISSING


def is_precondition_failed(exc: ClientError) -> bool:
    return error_code(exc) in _PRECONDITION


def read_json(s3: S3Client, bucket: str, key: str) -> tuple[Any, str] | None:
    """A small JSON object (a summary, a plan, a chunk's commit) and its ETag; None when there is none."""
    try:
        found = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if is_missing(exc):
            return None
        raise
    return json.loads(found["Body"].read()), found["ETag"]


class StreamingUpload:
    """Write an S3 object of any size with one part in memory; commit or abort, never half-write.

    Small outputs (under one part) are a single PutObject; larger ones a multipart upload.
    """

    def __init__(
        self, s3: S3Client, bucket: str, key: str, *, part_bytes: int, content_type: str = "application/x-ndjson"
    ) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key
        self.part_bytes = part_bytes
        self.content_type = content_type
        self.bytes_written = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        self.bytes_written += len(data)
        if len(self._buffer) >= self.part_bytes:
            self._flush_part()

    def _flush_part(self) -> None:
        if self._upload_id is None:
            created = self.s3.create_multipart_upload(Bucket=self.bucket, Key=self.key, ContentType=self.content_type)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        part = self.s3.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=bytes(self._buffer)
        )
        self._parts.append({"ETag": part["ETag"], "PartNumber": number})
        self._buffer.clear()

    def commit(self) -> None:
        if self._upload_id is None:
            self.s3.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer),
                               ContentType=self.content_type)
            self._buffer.clear()
            return
        if self._buffer:
            self._flush_part()
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
        )
        self._upload_id = None

    def abort(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)

    @property
    def parts(self) -> int:
        return len(self._parts)
