"""Dedupe stores for Powertools idempotency: DynamoDB when configured, else records in S3.

Deployed functions use ``MAAS_IDEMPOTENCY_TABLE`` (Powertools' DynamoDB layer: key ``id``, TTL
attribute ``expiration``). Without a table — local runs, tests, a bucket-only deployment — the
records live in the batch bucket under ``<output prefix>.idempotency/``, one small JSON object per
key, written with S3 conditional writes (``If-None-Match: *`` to claim a key, ``If-Match: <etag>``
to take over an expired one), which gives the same exactly-one-winner guarantee as DynamoDB's
conditional put. They sit under the output prefix, so they can never trigger a job; expire them
with a lifecycle rule on that prefix (the records also carry their own expiry, checked on read).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.idempotency import BasePersistenceLayer, DynamoDBPersistenceLayer
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import STATUS_CONSTANTS, DataRecord
from botocore.exceptions import ClientError

from functions.batch.s3io import is_missing, is_precondition_failed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from functions.settings import Settings


class S3PersistenceLayer(BasePersistenceLayer):
    """Idempotency records as S3 objects, claimed with conditional writes."""

    def __init__(self, s3: S3Client, bucket: str, prefix: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.s3, self.bucket, self.prefix = s3, bucket, prefix

    def _object_key(self, idempotency_key: str) -> str:
        return f"{self.prefix}{hashlib.sha256(idempotency_key.encode()).hexdigest()}.json"

    @staticmethod
    def _to_body(record: DataRecord) -> bytes:
        return json.dumps({
            "id": record.idempotency_key,
            "status": record.status,
            "expiration": record.expiry_timestamp,
            "in_progress_expiration": record.in_progress_expiry_timestamp,
            "data": record.response_data,
            "validation": record.payload_hash,
        }).encode()

    def _read(self, idempotency_key: str) -> tuple[DataRecord, str] | None:
        try:
            found = self.s3.get_object(Bucket=self.bucket, Key=self._object_key(idempotency_key))
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise
        item: dict[str, Any] = json.loads(found["Body"].read())
        record = DataRecord(
            idempotency_key=item["id"],
            status=item["status"],
            expiry_timestamp=item.get("expiration"),
            in_progress_expiry_timestamp=item.get("in_progress_expiration"),
            response_data=item.get("data") or "",
            payload_hash=item.get("validation") or "",
        )
        return record, found["ETag"]

    def _get_record(self, idempotency_key: str) -> DataRecord:
        found = self._read(idempotency_key)
        if found is None:
            raise IdempotencyItemNotFoundError
        return found[0]

    def _put_record(self, data_record: DataRecord) -> None:
        key = self._object_key(data_record.idempotency_key)
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=self._to_body(data_record), IfNoneMatch="*")
            return
        except ClientError as exc:
            if not is_precondition_failed(exc):
                raise
        found = self._read(data_record.idempotency_key)
        if found is None:  # deleted between our two calls: the other holder failed; try once more
            self._claim(key, data_record, None)
            return
        existing, etag = found
        if not _reclaimable(existing):
            self._validate_payload(data_payload=data_record, stored_data_record=existing)
            raise IdempotencyItemAlreadyExistsError(old_data_record=existing)
        self._claim(key, data_record, etag)

    def _claim(self, key: str, data_record: DataRecord, etag: str | None) -> None:
        condition: dict[str, str] = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=self._to_body(data_record), **condition)  # type: ignore[arg-type]
        except ClientError as exc:
            if is_precondition_failed(exc):  # someone else claimed it first
                raise IdempotencyItemAlreadyExistsError from exc
            raise

    def _update_record(self, data_record: DataRecord) -> None:
        key = self._object_key(data_record.idempotency_key)
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=self._to_body(data_record))

    def _delete_record(self, data_record: DataRecord) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._object_key(data_record.idempotency_key))


def _reclaimable(record: DataRecord) -> bool:
    """An expired record, or an in-progress one whose Lambda invocation has timed out."""
    if record.is_expired:
        return True
    deadline = record.in_progress_expiry_timestamp
    return (
        record.status == STATUS_CONSTANTS["INPROGRESS"] and deadline is not None and deadline < time.time() * 1000
    )


def persistence_layer(
    settings: Settings, *, bucket: str | None, s3: S3Client, dynamodb: Any = None
) -> BasePersistenceLayer | None:
    """DynamoDB when ``MAAS_IDEMPOTENCY_TABLE`` is set, else S3 records in ``bucket``; None if neither."""
    if settings.idempotency_table:
        return DynamoDBPersistenceLayer(
            table_name=settings.idempotency_table, key_attr="id", expiry_attr="expiration", boto3_client=dynamodb
        )
    if bucket:
        return S3PersistenceLayer(s3, bucket, settings.idempotency_prefix)
    return None
