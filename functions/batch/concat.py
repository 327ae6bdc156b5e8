"""One S3 object from many, in order, mostly server-side: a multipart upload of ``UploadPartCopy`` ranges.

S3 wants every part but the last to be at least 5 MiB (and at most 5 GiB), and at most 10,000 parts. Sources
of any size are laid out greedily: a source (or the rest of one) of at least 5 MiB is copied by S3 itself;
smaller pieces are read and joined into a part of their own, topped up from the next source's head when needed.
So the bytes that travel through the function are at most ~5 MiB per joined part (``JOINS_AT_ONCE`` of them in
memory at a time, whatever the number of sources), the rest never leaves S3, and the result is byte for byte the
sources one after another. Parts are uploaded a few at a time; their numbers fix the order. An object smaller
than one part is read and written with one PutObject.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIN_PART = 5 * 1024 * 1024
MAX_PART = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000
JOINS_AT_ONCE = 2  # parts assembled here at the same time (each ~5-10 MiB), on threads of their own; copies run wider


@dataclass(frozen=True)
class Piece:
    source: int  # index into the sources
    start: int
    end: int  # exclusive


@dataclass
class PartPlan:
    """One part of the result: copied by S3 (one piece) or read and joined here (several)."""

    pieces: list[Piece] = field(default_factory=list)
    copy: bool = False

    @property
    def size(self) -> int:
        return sum(p.end - p.start for p in self.pieces)


def plan_parts(sizes: Sequence[int], *, min_part: int = MIN_PART, max_part: int = MAX_PART) -> list[PartPlan]:
    """The parts that lay ``sizes`` end to end: every part but the last at least ``min_part``."""
    parts: list[PartPlan] = []
    joined = PartPlan()
    for index, size in enumerate(sizes):
        position = 0
        if joined.pieces:  # top up the part being joined from this source's head
            take = min(min_part - joined.size, size)
            if take:
                joined.pieces.append(Piece(index, 0, take))
            position = take
            if joined.size >= min_part:
                parts.append(joined)
                joined = PartPlan()
        remaining = size - position
        last = index == len(sizes) - 1
        while remaining >= min_part or (last and remaining and not joined.pieces):
            length = min(remaining, max_part)
            if remaining - length and remaining - length < min_part:  # never leave a tail too small to copy
                length = remaining - min_part
            parts.append(PartPlan([Piece(index, position, position + length)], copy=True))
            position += length
            remaining -= length
        if remaining:
            joined.pieces.append(Piece(index, position, size))
    if joined.pieces:
        parts.append(joined)
    return parts


def concatenate(
    s3: S3Client, bucket: str, sources: Sequence[tuple[str, int]], key: str, *,
    content_type: str = "application/x-ndjson", workers: int = 16,
) -> int:
    """Write ``key`` as the concatenation of ``sources`` (key, size), in order; returns its size."""
    sizes = [size for _, size in sources]
    total = sum(sizes)
    if total < MIN_PART:
        body = b"".join(_read(s3, bucket, sources[p.source][0], p) for p in _pieces(sources))
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        return total
    parts = plan_parts(sizes)
    if len(parts) > MAX_PARTS:
        raise ValueError(f"{len(sources)} sources need {len(parts)} parts; S3 allows {MAX_PARTS}")
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key, ContentType=content_type)["UploadId"]

    def copy(number: int, part: PartPlan) -> CompletedPartTypeDef:
        (piece,) = part.pieces
        copied = s3.upload_part_copy(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
            CopySource={"Bucket": bucket, "Key": sources[piece.source][0]},
            CopySourceRange=f"bytes={piece.start}-{piece.end - 1}",
        )
        return {"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": number}

    def join(number: int, part: PartPlan) -> CompletedPartTypeDef:
        pieces = [_read(s3, bucket, sources[p.source][0], p) for p in part.pieces]
        body = b"".join(pieces)
        del pieces
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body)["ETag"]
        return {"ETag": etag, "PartNumber": number}

    try:
        # joins on threads of their own: their buffers stay in JOINS_AT_ONCE malloc arenas, however many parts
        with ThreadPoolExecutor(max_workers=workers) as copies, ThreadPoolExecutor(max_workers=JOINS_AT_ONCE) as joins:
            futures: list[Future[CompletedPartTypeDef]] = [
                copies.submit(copy, number, part) if part.copy else joins.submit(join, number, part)
                for number, part in enumerate(parts, start=1)
            ]
            done = [future.result() for future in futures]
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done})
    except BaseException:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
    return total


def _pieces(sources: Sequence[tuple[str, int]]) -> list[Piece]:
    return [Piece(i, 0, size) for i, (_, size) in enumerate(sources) if size]


def _read(s3: S3Client, bucket: str, key: str, piece: Piece) -> bytes:
    found = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={piece.start}-{piece.end - 1}")
    data: bytes = found["Body"].read()
    if len(data) != piece.end - piece.start:
        raise OSError(f"s3://{bucket}/{key}: read {len(data)} bytes of {piece.start}-{piece.end - 1}")
    return data
