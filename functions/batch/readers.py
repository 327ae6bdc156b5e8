"""Streaming readers: an S3 body (an iterator of byte chunks) → records, one per input line.

Nothing here holds more than one line in memory, and a line longer than ``max_line_bytes`` is
skipped as it streams by and reported as an error record — a 2 GB line cannot exhaust the function.
A line that cannot be read — whatever the reader raises on it: bad JSON, an integer over 4,300 digits,
nesting deeper than the parser follows, an id that is not valid Unicode — becomes a record carrying its
error, so the output never has a gap. Lines end in LF, CRLF or a bare CR, mixed as they come.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from functions.batch.exceptions import MalformedRecordError
from functions.errors import MaasError, PayloadTooLargeError
from functions.inference.batching import WorkItem
from functions.inference.image_config import ImagePreprocessing
from functions.inference.pipelines.base import Capability, Pipeline

if TYPE_CHECKING:
    from functions.settings import Settings

RecordId = str | int | None


class InputFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    IMAGE = "image"


_SUFFIXES = {
    ".jsonl": InputFormat.JSONL,
    ".ndjson": InputFormat.JSONL,
    ".csv": InputFormat.CSV,
    ".jpg": InputFormat.IMAGE,
    ".jpeg": InputFormat.IMAGE,
    ".png": InputFormat.IMAGE,
    ".webp": InputFormat.IMAGE,
}


def detect_format(name: str) -> InputFormat | None:
    """The input format from the object name's suffix; None when it is not one we read."""
    dot = name.rfind(".")
    return _SUFFIXES.get(name[dot:].lower()) if dot >= 0 else None


def supported_suffixes() -> list[str]:
    return sorted(_SUFFIXES)


def output_name(name: str, fmt: InputFormat) -> str:
    """JSONL keeps its name; anything else gets ``.jsonl`` appended (``a.csv`` → ``a.csv.jsonl``)."""
    return name if fmt is InputFormat.JSONL else f"{name}.jsonl"


@dataclass(frozen=True)
class OversizedLine:
    size: int


@dataclass
class InputRecord:
    """One input line: a work item to run, or the error that stops it (never both)."""

    line: int
    id: RecordId
    item: WorkItem | None = None
    error: MaasError | None = None
    image_key: str | None = None  # a manifest line naming an image object, fetched before inference
    size: int = 0  # bytes of input it holds in memory (its line; once fetched, its image)


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def iter_lines(chunks: Iterable[bytes], max_line_bytes: int) -> Iterator[bytes | OversizedLine]:
    """Split a byte stream on ``\\n``, ``\\r\\n`` or a bare ``\\r``, with memory bounded by ``max_line_bytes``."""
    pending = b""
    skipped = 0  # > 0 while inside an oversized line: its bytes are counted, not kept
    after_cr = False  # the last chunk ended in \r: a \n opening this one completes that CRLF
    for chunk in chunks:
        if not chunk:
            continue
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        *complete, tail = _LINE_BREAK.split(chunk)
        for part in complete:
            if skipped:
                yield OversizedLine(skipped + len(part))
                skipped = 0
                continue
            line = pending + part
            pending = b""
            yield line if len(line) <= max_line_bytes else OversizedLine(len(line))
        if skipped:
            skipped += len(tail)
        else:
            pending += tail
            if len(pending) > max_line_bytes:
                skipped, pending = len(pending), b""
    if skipped:
        yield OversizedLine(skipped)
    elif pending.strip():
        yield pending


def _decode(raw: bytes | OversizedLine, number: int, limit: int) -> str | MaasError:
    if isinstance(raw, OversizedLine):
        return PayloadTooLargeError(f"line {number} is {raw.size} bytes; lines may be at most {limit} bytes")
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM may open the file
    except UnicodeDecodeError as exc:
        return MalformedRecordError(f"line {number} is not UTF-8 text (byte {exc.start})")


def read_jsonl(
    lines: Iterable[bytes | OversizedLine], *, max_line_bytes: int, first_line: int = 1
) -> Iterator[InputRecord]:
    """JSON Lines: ``{"id": ..., "inputs": ..., "parameters"?: {...}}`` or ``{"id", "image": key}``.

    Blank lines are not records and are skipped; every other line yields exactly one record. ``first_line`` is
    the number of the first line given (a chunk of a larger object starts further down).
    """
    for number, raw in enumerate(lines, start=first_line):
        if not isinstance(raw, OversizedLine) and not raw.strip():
            continue
        text = _decode(raw, number, max_line_bytes)
        if isinstance(text, MaasError):
            yield InputRecord(number, None, error=text)
            continue
        record = _record_from_line(text, number)
        record.size = len(raw) if isinstance(raw, bytes) else 0
        yield record


def _record_from_line(text: str, number: int) -> InputRecord:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number} is not valid JSON: {exc.msg} at column {exc.colno}"))
    except RecursionError:
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number} is nested too deeply to read; flatten its inputs"))
    except ValueError as exc:  # an integer of more than 4,300 digits (sys.int_info.str_digits_check_threshold)
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number} could not be read: {str(exc).split(';')[0]}"))
    try:
        return _record_from_object(body, number)
    except Exception as exc:  # any other surprise in reading one line is that line's own error
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number} could not be read as a record ({type(exc).__name__})"))


def _record_from_object(body: Any, number: int) -> InputRecord:
    if not isinstance(body, dict):
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number} must be a JSON object with 'id' and 'inputs', got {type(body).__name__}"))
    record_id = body.get("id")
    if record_id is None or isinstance(record_id, bool) or not isinstance(record_id, str | int):
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number} needs an 'id' (a string or integer) so its result can be matched"))
    if isinstance(record_id, str) and not _is_unicode(record_id):
        return InputRecord(number, None, error=MalformedRecordError(
            f"line {number}: 'id' is not valid Unicode (a lone surrogate escape such as \\ud800); it could not "
            "be written back. Use UTF-8 text, with surrogate escapes in valid pairs"))
    parameters = body.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        return InputRecord(number, record_id, error=MalformedRecordError(
            f"line {number}: 'parameters' must be an object"))
    if isinstance(body.get("image"), str) and "inputs" not in body:
        return InputRecord(number, record_id, item=WorkItem([], parameters), image_key=body["image"])
    if "inputs" not in body:
        return InputRecord(number, record_id, error=MalformedRecordError(
            f"line {number} has no 'inputs' (or 'image' key for image models)"))
    return InputRecord(number, record_id, item=WorkItem([body["inputs"]], parameters))


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_csv(
    lines: Iterable[bytes | OversizedLine], *, text_column: str, id_column: str, max_line_bytes: int,
    first_line: int = 1, header: list[str] | None = None, rows_before: int = 0,
) -> Iterator[InputRecord]:
    """CSV with a header row: ``text_column`` is the input, ``id_column`` (optional) the id.

    One record per physical line: a quoted field may not span lines (such a line is an error record).
    Without an id column the id is the data row's number (1 = first row after the header). A chunk of a larger
    object passes the object's ``header`` (its lines are all data rows), its ``first_line`` and the data rows
    before it (``rows_before``), so numbers and ids are the whole object's.
    """
    row_number = rows_before
    for number, raw in enumerate(lines, start=first_line):
        if not isinstance(raw, OversizedLine) and not raw.strip():
            continue
        if header is None:
            header = csv_header(raw, number, max_line_bytes)
            continue
        text = _decode(raw, number, max_line_bytes)
        row_number += 1
        default_id: RecordId = row_number
        if isinstance(text, MaasError):
            yield InputRecord(number, default_id, error=text)
            continue
        row = _parse_csv_line(text)
        record = _record_from_row(row, header, number, default_id, text_column, id_column)
        record.size = len(raw) if isinstance(raw, bytes) else 0
        yield record


def csv_header(raw: bytes | OversizedLine, number: int, max_line_bytes: int) -> list[str]:
    """The column names of a CSV header line; an unreadable header rejects the whole object."""
    text = _decode(raw, number, max_line_bytes)
    if isinstance(text, MaasError):
        raise MalformedRecordError(f"the CSV header (line {number}) is unreadable: {text.message}")
    return _parse_csv_line(text) or []


def _parse_csv_line(text: str) -> list[str] | None:
    try:
        return next(csv.reader([text], strict=True), [])
    except csv.Error:
        return None


def _record_from_row(
    row: list[str] | None, header: list[str], number: int, default_id: RecordId, text_column: str, id_column: str
) -> InputRecord:
    if row is None:
        return InputRecord(number, default_id, error=MalformedRecordError(
            f"line {number} is not a valid CSV row (unbalanced quotes? fields may not span lines)"))
    if text_column not in header:
        return InputRecord(number, default_id, error=MalformedRecordError(
            f"the CSV header has no {text_column!r} column (columns: {', '.join(header) or 'none'}); "
            "set MAAS_CSV_TEXT_COLUMN or rename the column"))
    if len(row) != len(header):
        return InputRecord(number, default_id, error=MalformedRecordError(
            f"line {number} has {len(row)} fields; the header has {len(header)}"))
    values = dict(zip(header, row, strict=True))
    record_id: RecordId = values.get(id_column) or default_id
    return InputRecord(number, record_id, item=WorkItem([values[text_column]]))


# --- images: within the model's own limit, and within the job's memory -----------------------------------
def image_limit_of(pipeline: Pipeline[Any]) -> int | None:
    """The model's own per-image limit (its preprocessing config's ``max_image_bytes``); None for text models."""
    config = getattr(pipeline, "preprocessing", None)
    if not pipeline.has(Capability.IMAGE_INPUT) or not isinstance(config, ImagePreprocessing):
        return None
    return config.max_image_bytes


def image_too_large(where: str, size: int, limit: int, model: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"{where} is {size:,} bytes; {model} accepts at most {limit:,} bytes per image. "
                                "Downscale or recompress it")


def read_image_object(name: str, chunks: Iterable[bytes], size: int, limit: int | None, model: str) -> InputRecord:
    """An image uploaded as the input object: one record, read only when within the model's limit."""
    if limit is None:
        return InputRecord(1, name, error=MalformedRecordError(
            f"{name}: {model} is not an image model; send it JSONL or CSV text"))
    if size > limit:
        return InputRecord(1, name, error=image_too_large(name, size, limit, model))
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) > limit:  # never more than the limit, whatever the event said the size was
            return InputRecord(1, name, error=image_too_large(name, len(data), limit, model))
    return InputRecord(1, name, item=WorkItem([bytes(data)]), size=len(data))


def input_budget(settings: Settings, context: Any) -> int:
    """Bytes of input one job may hold at once: a quarter of the function's memory (MAAS_BATCH_MEMORY_MB, else
    the Lambda context's ``memory_limit_in_mb``, else 2048 MB)."""
    memory_mb = settings.batch_memory_mb or getattr(context, "memory_limit_in_mb", None) or 2048
    return int(memory_mb) * 1024 * 1024 // 4
