"""Configuration of the S3 and SQS paths (``MAAS_*``), checked when the function starts.

An unsafe layout is refused here, at init, with a message that says what to change — never
discovered later as a loop of functions re-triggering themselves on their own output.
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from functions.batch.exceptions import BatchConfigError
from functions.batch.replies import ReplyAllowList, S3Destination
from functions.contract.deployment import IDEMPOTENCY_DIR

_MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum multipart part size (all parts but the last)


class BatchSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MAAS_", extra="ignore")

    # The bucket whose ``input_prefix`` triggers jobs; empty accepts events from any bucket (local runs).
    batch_bucket: str = ""
    input_prefix: str = "inputs/"
    output_prefix: str = "outputs/"
    # Comma-separated s3://bucket/prefix and SQS queue URLs that SQS results may be written to.
    reply_allowlist: str = ""
    # DynamoDB table for Powertools idempotency (key ``id``, TTL ``expiration``); empty = S3 records.
    idempotency_table: str = ""
    idempotency_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    # Account id sent as ExpectedBucketOwner on every S3 call (guards against bucket sniping).
    expected_bucket_owner: str = ""
    csv_text_column: str = "text"
    csv_id_column: str = "id"
    # A line longer than this becomes an error line; it is never held in memory whole.
    max_line_bytes: int = Field(1024 * 1024, ge=1024)
    # Objects larger than this are rejected (summary only): a Lambda job has 15 minutes.
    max_object_bytes: int = Field(2 * 1024**3, ge=1)
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1)
    # Records buffered and sorted by length before chunking (less padding); multiple of max_batch.
    window_batches: int = Field(8, ge=1, le=64)
    output_part_bytes: int = Field(8 * 1024 * 1024, ge=_MIN_PART_BYTES)

    @model_validator(mode="after")
    def _safe_layout(self) -> BatchSettings:
        check_prefixes(self.input_prefix, self.output_prefix)
        if self.expected_bucket_owner and not re.fullmatch(r"\d{12}", self.expected_bucket_owner):
            raise BatchConfigError(
                f"MAAS_EXPECTED_BUCKET_OWNER={self.expected_bucket_owner!r} must be a 12-digit AWS account id"
            )
        for entry in self.allowlist().entries:
            if isinstance(entry, S3Destination) and self._overlaps_input(entry):
                raise BatchConfigError(
                    f"MAAS_REPLY_ALLOWLIST entry {entry} overlaps the input prefix "
                    f"s3://{self.batch_bucket or '<any bucket>'}/{self.input_prefix}: results written there "
                    "would start batch jobs. Allow a prefix outside the input prefix"
                )
        return self

    def _overlaps_input(self, entry: S3Destination) -> bool:
        if self.batch_bucket and entry.bucket != self.batch_bucket:
            return False
        return entry.prefix.startswith(self.input_prefix) or self.input_prefix.startswith(entry.prefix)

    def allowlist(self) -> ReplyAllowList:
        return ReplyAllowList.parse(self.reply_allowlist)

    @property
    def idempotency_prefix(self) -> str:
        return self.output_prefix + IDEMPOTENCY_DIR


def check_prefixes(input_prefix: str, output_prefix: str) -> None:
    """Refuse an output prefix that an S3 notification on the input prefix could match, and vice versa."""
    for name, prefix in (("MAAS_INPUT_PREFIX", input_prefix), ("MAAS_OUTPUT_PREFIX", output_prefix)):
        if not prefix:
            raise BatchConfigError(
                f"{name} is empty: an empty prefix means the whole bucket, which contains the other prefix. "
                "Use separate folders such as inputs/ and outputs/"
            )
        if prefix.startswith("/") or not prefix.endswith("/") or "//" in prefix:
            raise BatchConfigError(
                f"{name}={prefix!r} must be a folder: no leading '/', ending in '/', like 'inputs/'"
            )
    if output_prefix.startswith(input_prefix) or input_prefix.startswith(output_prefix):
        raise BatchConfigError(
            f"MAAS_OUTPUT_PREFIX={output_prefix!r} overlaps MAAS_INPUT_PREFIX={input_prefix!r}: outputs written "
            "there would trigger the function again (an S3 event loop). Use disjoint folders, e.g. inputs/ and "
            "outputs/"
        )


@lru_cache(maxsize=1)
def get_batch_settings() -> BatchSettings:
    """The process-wide batch settings; raises BatchConfigError at init when the layout is unsafe."""
    return BatchSettings()
