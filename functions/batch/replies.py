"""Where SQS results go: ``reply_to`` destinations, checked against the configured allow-list.

A message names its destination, but only configuration decides which destinations exist: a
``reply_to`` that is not covered by ``MAAS_REPLY_ALLOWLIST`` is refused (OWASP API7: never write to
a location chosen by request content alone).

- S3: ``s3://bucket/prefix`` on the list allows ``s3://bucket/prefix/...`` (whole path segments only:
  ``s3://b/results`` does not allow ``s3://b/results-evil``).
- SQS: a queue URL on the list allows exactly that queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from functions.batch.exceptions import BatchConfigError, ReplyRefusedError

if TYPE_CHECKING:
    from functions.settings import Settings

_QUEUE_HOST = re.compile(r"^(sqs\.[a-z0-9-]+\.amazonaws\.com(\.cn)?|[a-z0-9-]+\.queue\.amazonaws\.com)$")
_QUEUE_PATH = re.compile(r"^/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Destination:
    bucket: str
    prefix: str  # "" or ends with "/"

    def covers(self, other: S3Destination) -> bool:
        return self.bucket == other.bucket and other.prefix.startswith(self.prefix)

    def key_for(self, result_id: str) -> str:
        return f"{self.prefix}{result_id}.json"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class QueueDestination:
    url: str

    @property
    def fifo(self) -> bool:
        return self.url.endswith(".fifo")

    def __str__(self) -> str:
        return self.url


Destination = S3Destination | QueueDestination


def parse_destination(uri: str) -> Destination:
    """Parse an ``s3://bucket/prefix`` or SQS queue URL; raise ReplyRefusedError when malformed."""
    if not isinstance(uri, str) or not uri or any(ord(c) < 32 for c in uri):
        raise ReplyRefusedError("reply_to must be an s3://bucket/prefix URI or an SQS queue URL", param="reply_to")
    try:
        parsed = urlparse(uri)
        host = parsed.hostname or ""
    except ValueError as exc:  # e.g. a netloc that NFKC-normalises into URL syntax (fullwidth '/')
        raise ReplyRefusedError(f"reply_to {uri!r} is not a valid URI: {exc}", param="reply_to") from exc
    if parsed.scheme == "s3":
        return _parse_s3(uri, parsed.netloc, parsed.path)
    if parsed.scheme in ("https", "http"):
        return _parse_queue(uri, parsed.scheme, host, parsed.path)
    raise ReplyRefusedError(
        f"reply_to {uri!r}: scheme must be s3:// or https:// (an SQS queue URL)", param="reply_to"
    )


def _parse_s3(uri: str, bucket: str, path: str) -> S3Destination:
    if not _BUCKET.match(bucket):
        raise ReplyRefusedError(f"reply_to {uri!r}: {bucket!r} is not a valid bucket name", param="reply_to")
    segments = [s for s in path.split("/") if s]
    if any(s in (".", "..") for s in segments) or "//" in path.lstrip("/"):
        raise ReplyRefusedError(f"reply_to {uri!r}: the prefix may not contain '.', '..' or empty segments",
                                param="reply_to")
    return S3Destination(bucket, "".join(f"{s}/" for s in segments))


def _parse_queue(uri: str, scheme: str, host: str, path: str) -> QueueDestination:
    local = host in _LOOPBACK
    if not local and (scheme != "https" or not _QUEUE_HOST.match(host)):
        raise ReplyRefusedError(
            f"reply_to {uri!r} is not an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)",
            param="reply_to",
        )
    if not _QUEUE_PATH.match(path.rstrip("/")):
        raise ReplyRefusedError(f"reply_to {uri!r}: the path must be /<12-digit account>/<queue name>",
                                param="reply_to")
    return QueueDestination(uri.rstrip("/"))


class ReplyAllowList:
    """The destinations results may be written to, from ``MAAS_REPLY_ALLOWLIST``."""

    def __init__(self, entries: list[Destination]) -> None:
        self.entries = entries

    @classmethod
    def parse(cls, value: str) -> ReplyAllowList:
        entries: list[Destination] = []
        for raw in (item.strip() for item in value.split(",")):
            if not raw:
                continue
            try:
                entries.append(parse_destination(raw))
            except ReplyRefusedError as exc:
                raise BatchConfigError(f"MAAS_REPLY_ALLOWLIST entry {raw!r} is invalid: {exc.message}") from exc
        return cls(entries)

    def resolve(self, reply_to: Any) -> Destination:
        """The destination for ``reply_to`` if the allow-list covers it, else ReplyRefusedError."""
        destination = parse_destination(reply_to)
        for entry in self.entries:
            if isinstance(destination, S3Destination) and isinstance(entry, S3Destination):
                if entry.covers(destination):
                    return destination
            elif destination == entry:
                return destination
        raise ReplyRefusedError(
            f"reply_to {reply_to!r} is not on this function's allow-list (MAAS_REPLY_ALLOWLIST)", param="reply_to"
        )

    def __bool__(self) -> bool:
        return bool(self.entries)


def allowlist_for(settings: Settings) -> ReplyAllowList:
    """``MAAS_REPLY_ALLOWLIST`` parsed, refusing any S3 entry that overlaps the input prefix (results written
    there would start batch jobs). The S3/SQS handlers call it at init, so a bad layout never handles an event."""
    allowlist = ReplyAllowList.parse(settings.reply_allowlist)
    for entry in allowlist.entries:
        if not isinstance(entry, S3Destination) or (settings.batch_bucket and entry.bucket != settings.batch_bucket):
            continue
        if entry.prefix.startswith(settings.input_prefix) or settings.input_prefix.startswith(entry.prefix):
            raise BatchConfigError(
                f"MAAS_REPLY_ALLOWLIST entry {entry} overlaps the input prefix "
                f"s3://{settings.batch_bucket or '<any bucket>'}/{settings.input_prefix}: results written there "
                "would start batch jobs. Allow a prefix outside the input prefix"
            )
    return allowlist
