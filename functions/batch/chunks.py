"""Cutting a JSONL or CSV object into chunks of whole windows of records, by byte offsets, in one pass.

A chunk is a byte range ``[start, end)`` of the object that begins right after a line break and holds whole
windows of records (``window`` = the model's ``max_batch`` x ``window_batches``, what the direct path buffers and
sorts at a time), so a chunk's windows are exactly the windows a direct run of the object would form. A chunk
closes at the first window boundary once it holds ``chunk_bytes`` of input (the last one holds the rest).

Lines are found as :func:`functions.batch.readers.iter_lines` finds them (LF, CRLF or a bare CR; a CRLF split
across two reads is one break), and a record is what the readers make one of: every line that is not blank
(only spaces, tabs, vertical tabs, form feeds), a line over ``max_line_bytes`` included (it becomes an error
line); for CSV the first non-blank line is the header, not a record. Each chunk carries the number of its first
line and the records before it, so line numbers and CSV row ids in its output are the whole object's.

Memory: one read at a time (plus a CSV header of at most ``max_line_bytes``); the chunk list (at most a few
thousand entries).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

_BREAK = re.compile(rb"\r\n|\r|\n")
_SPACE = frozenset(b" \t\x0b\x0c")  # what bytes.strip() removes from a line that holds no line break


class Chunk(TypedDict):
    """One item of the plan: the state machine's ItemReader reads one such line per chunk."""

    index: int
    start: int  # byte offset of its first line
    end: int  # byte offset after its last line's break (the object's size for the last chunk)
    first_line: int  # 1-based number of its first line
    rows_before: int  # records (CSV: data rows) in the chunks before it
    records: int


class CsvHeader(TypedDict):
    line: int
    start: int
    end: int  # after the header's text, before its line break


@dataclass
class ChunkPlan:
    chunks: list[Chunk] = field(default_factory=list)
    lines: int = 0
    records: int = 0
    size: int = 0
    header: CsvHeader | None = None


@dataclass
class _Scan:
    """The running state of one pass; ``on_line`` sees every line, in order."""

    csv: bool
    max_line_bytes: int
    window: int
    chunk_bytes: int
    plan: ChunkPlan = field(default_factory=ChunkPlan)
    chunk_start: int = 0
    chunk_first_line: int = 1
    chunk_records: int = 0

    def on_line(self, start: int, text_end: int, end: int, blank: bool) -> None:
        """A line ``[start, text_end)`` whose break ends at ``end``."""
        plan = self.plan
        plan.lines += 1
        if blank:
            return
        if self.csv and plan.header is None:
            plan.header = CsvHeader(line=plan.lines, start=start, end=text_end)
            return
        plan.records += 1
        self.chunk_records += 1
        if self.chunk_records % self.window == 0 and end - self.chunk_start >= self.chunk_bytes:
            self.close(end)

    def close(self, end: int) -> None:
        plan = self.plan
        plan.chunks.append(Chunk(index=len(plan.chunks), start=self.chunk_start, end=end,
                                 first_line=self.chunk_first_line,
                                 rows_before=plan.records - self.chunk_records, records=self.chunk_records))
        self.chunk_start, self.chunk_first_line, self.chunk_records = end, plan.lines + 1, 0


def plan_chunks(
    body: Iterable[bytes], *, csv: bool, max_line_bytes: int, window: int, chunk_bytes: int
) -> ChunkPlan:
    """Read ``body`` once and cut it into chunks; every object gets at least one chunk."""
    scan = _Scan(csv=csv, max_line_bytes=max_line_bytes, window=max(1, window), chunk_bytes=chunk_bytes)
    offset = 0  # of the current read
    line_start = 0
    pending = 0  # bytes of the current line seen so far (in earlier reads)
    pending_blank = True  # ... and whether they were all blank
    deferred: tuple[int, int, bool] | None = None  # a line ended by a \r that closed the previous read
    for data in body:
        if not data:
            continue
        begin = 0
        if deferred is not None:
            start, text_end, blank = deferred
            if data[:1] == b"\n":  # that \r and this \n are one break
                begin = 1
            scan.on_line(start, text_end, offset + begin, blank)
            deferred, line_start = None, offset + begin
        position = begin
        for match in _BREAK.finditer(data, begin):
            text_end = match.start()
            length = pending + text_end - position
            blank = length <= max_line_bytes and pending_blank and _blank(data, position, text_end)
            end = offset + match.end()
            if match.end() == len(data) and data[-1:] == b"\r":
                deferred = (line_start, offset + text_end, blank)
            else:
                scan.on_line(line_start, offset + text_end, end, blank)
            line_start, pending, pending_blank, position = end, 0, True, match.end()
        if position < len(data):
            pending_blank = pending_blank and pending + len(data) - position <= max_line_bytes and \
                _blank(data, position, len(data))
            pending += len(data) - position
        offset += len(data)
    if deferred is not None:
        scan.on_line(deferred[0], deferred[1], offset, deferred[2])
    elif pending:
        scan.on_line(line_start, offset, offset, pending <= max_line_bytes and pending_blank)
    if scan.chunk_records or not scan.plan.chunks:
        scan.close(offset)
    else:  # only blank lines after the last boundary: they belong to the last chunk
        scan.plan.chunks[-1]["end"] = offset
    scan.plan.size = offset
    return scan.plan


def _blank(data: bytes, start: int, end: int) -> bool:
    if start == end:
        return True
    if data[start] not in _SPACE:  # nearly every line: decided by its first byte
        return False
    return not data[start:end].strip()
