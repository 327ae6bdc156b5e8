"""The pieces a chunked S3 job is made of, without S3: the plan's cut, the merge's part layout, the batch sizing.

- **cut** (hypothesis): for any JSONL or CSV bytes (LF, CRLF, bare CR, blank and whitespace lines, over-long lines,
  a BOM, no final break) read in any sizes, reading each chunk on its own (with its first line, CSV header and
  rows before it) gives exactly the records — line numbers, ids, errors — a direct read of the whole gives;
  chunks tile the object and hold whole windows of records;
- **merge** (hypothesis): any source sizes are laid end to end in parts S3 accepts (every part but the last at
  least the minimum, none above the maximum);
- **sizing**: the committed bench's rate, scaled to a Lambda's vCPUs; the route threshold and chunk size; the
  10-million-record example of docs/batch.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.batch.chunks import plan_chunks
from functions.batch.concat import plan_parts
from functions.batch.readers import csv_header, iter_lines, read_csv, read_jsonl
from functions.contract.batch_plan import (
    LAMBDA_MB_PER_VCPU,
    MAX_CHUNKS,
    MIN_CHUNK_BYTES,
    BatchRate,
    batch_sizing,
    default_rate,
    estimate_job,
    rate_from_benchmark,
    read_batch_rate,
)

REPO = Path(__file__).resolve().parents[2]
LIMIT = 40  # max_line_bytes: some generated lines are longer

JSONL_LINES = [b'{"id": 1, "inputs": "a"}', b"", b"  ", b"\t\x0b", b'{"id": "x", "inputs": "bb"}', b"not json",
               b"x" * 50, b' {"id": 2, "inputs": "c"}', b'\xef\xbb\xbf{"id": 3, "inputs": "d"}', b'{"inputs": "e"}']
CSV_LINES = [b"1,hello", b"", b" ", b'2,"quoted, text"', b"a,b,c", b"z" * 50, b'"open,quote', b"7,\xff"]
BREAKS = [b"\n", b"\r\n", b"\r"]


def pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, position, index = [], 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        out.append(data[position:position + size])
        position, index = position + size, index + 1
    return out


def records(data: bytes, csv: bool, sizes: list[int], *, first_line: int = 1, header: list[str] | None = None,
            rows_before: int = 0) -> list[tuple[int, object, str | None]]:
    lines = iter_lines(pieces(data, sizes), LIMIT)
    if csv:
        read = read_csv(lines, text_column="text", id_column="id", max_line_bytes=LIMIT, first_line=first_line,
                        header=header, rows_before=rows_before)
    else:
        read = read_jsonl(lines, max_line_bytes=LIMIT, first_line=first_line)
    return [(r.line, r.id, r.error.code if r.error else None) for r in read]


@st.composite
def objects(draw: st.DrawFn) -> tuple[bytes, bool]:
    csv = draw(st.booleans())
    if csv:
        head = draw(st.sampled_from([b"id,text", b"text", b"", b"  "]))
        body = [head, *draw(st.lists(st.sampled_from(CSV_LINES), max_size=30))]
    else:
        body = draw(st.lists(st.sampled_from(JSONL_LINES), max_size=30))
    data = b"".join(line + draw(st.sampled_from(BREAKS)) for line in body)
    if draw(st.booleans()):
        data += draw(st.sampled_from([b"", b"  ", b'{"id": 9, "inputs": "tail"}', b"y" * 60, b"9,tail"]))
    return data, csv


@settings(max_examples=400, deadline=None)
@given(obj=objects(), window=st.integers(1, 4), chunk_bytes=st.sampled_from([1, 16, 64, 10**6]),
       plan_reads=st.lists(st.integers(1, 70), min_size=1, max_size=4),
       chunk_reads=st.lists(st.integers(1, 70), min_size=1, max_size=4))
def test_reading_the_chunks_one_by_one_gives_what_reading_the_object_gives(
    obj: tuple[bytes, bool], window: int, chunk_bytes: int, plan_reads: list[int], chunk_reads: list[int]
) -> None:
    data, csv = obj
    try:
        whole: object = records(data, csv, [7])
    except Exception as exc:  # an unreadable CSV header rejects the object: the plan sees it too
        whole = type(exc).__name__
    plan = plan_chunks(pieces(data, plan_reads), csv=csv, max_line_bytes=LIMIT, window=window, chunk_bytes=chunk_bytes)
    assert plan.chunks[0]["start"] == 0 and plan.chunks[-1]["end"] == len(data) == plan.size
    assert all(a["end"] == b["start"] for a, b in zip(plan.chunks, plan.chunks[1:], strict=False))
    assert all(c["records"] % window == 0 for c in plan.chunks[:-1])  # whole windows: a direct run's windows
    try:
        header = None
        if csv and plan.header is not None:
            h = plan.header
            header = csv_header(data[h["start"]:h["end"]], h["line"], LIMIT)
        chunked: object = []
        for chunk in plan.chunks:
            found = records(data[chunk["start"]:chunk["end"]], csv, chunk_reads, first_line=chunk["first_line"],
                            header=header if chunk["index"] else None, rows_before=chunk["rows_before"])
            assert len(found) == chunk["records"]
            chunked += found  # type: ignore[operator]
    except Exception as exc:
        chunked = type(exc).__name__
    assert chunked == whole
    assert plan.records == (len(whole) if isinstance(whole, list) else plan.records)


@settings(max_examples=400, deadline=None)
@given(sizes=st.lists(st.integers(0, 40), max_size=15), min_part=st.integers(3, 9))
def test_any_sources_are_laid_out_in_parts_s3_accepts(sizes: list[int], min_part: int) -> None:
    parts = plan_parts(sizes, min_part=min_part, max_part=2 * min_part + 1)
    laid = [(p.source, offset) for part in parts for p in part.pieces for offset in range(p.start, p.end)]
    assert laid == [(i, offset) for i, size in enumerate(sizes) for offset in range(size)]
    assert all(min_part <= part.size for part in parts[:-1])
    assert all(0 < part.size <= 2 * min_part + 1 for part in parts)
    assert all(len(part.pieces) == 1 for part in parts if part.copy)


def test_the_committed_bench_rate_is_its_slowest_set_in_bytes_per_second() -> None:
    rate = read_batch_rate(REPO / "docs" / "benchmarks", "minilm-embed", "sentence-embeddings")
    report = json.loads((REPO / "docs" / "benchmarks" / "minilm-embed.json").read_text())
    mixed = report["batch_throughput"]["sets"]["mixed"]
    assert rate.records_per_s == mixed["records_per_s"]["s3_job"] and rate.bytes_per_record == mixed["mean_line_bytes"]
    assert "mixed set" in rate.source and rate.vcpus == 2
    uniform = report["batch_throughput"]["sets"]["uniform"]
    assert rate.bytes_per_s < uniform["records_per_s"]["s3_job"] * uniform["mean_line_bytes"]
    assert rate_from_benchmark({"model": "x"}, "x.json") is None  # no S3 job measured: the task's default
    assert read_batch_rate(REPO / "docs" / "benchmarks", "intent-classifier", "text-classification").source == \
        "default for text-classification"


def test_the_rate_scales_with_a_lambdas_vcpus_and_never_above_the_bench() -> None:
    rate = BatchRate(records_per_s=600, bytes_per_record=100, vcpus=2, source="t")
    assert rate.on_lambda(LAMBDA_MB_PER_VCPU).records_per_s == 300
    assert rate.on_lambda(10240).records_per_s == 600
    sizing = batch_sizing(rate, memory_mb=LAMBDA_MB_PER_VCPU, timeout_s=300, map_concurrency=10)
    assert sizing.route_threshold_bytes == 300 * 100 * 300 // 2  # half the timeout at 30 KB/s
    assert sizing.chunk_bytes == sizing.route_threshold_bytes
    assert sizing.max_chunked_bytes == MAX_CHUNKS * sizing.chunk_bytes
    assert estimate_job(sizing.max_chunked_bytes + 1, sizing).route == "too-large"
    slow = batch_sizing(default_rate("text-generation"), memory_mb=4096, timeout_s=300, map_concurrency=10)
    assert slow.chunk_bytes == 7500 >= MIN_CHUNK_BYTES  # a slow model: small chunks (150 s of its own work)


def test_ten_million_records_plan_as_docs_batch_md_shows() -> None:
    """docs/batch.md's example: minilm-embed as deployed (2,048 MB arm64, 300 s), MaxConcurrency 10."""
    rate = read_batch_rate(REPO / "docs" / "benchmarks", "minilm-embed", "sentence-embeddings")
    sizing = batch_sizing(rate, memory_mb=2048, timeout_s=300, map_concurrency=10)
    size = round(10_000_000 * rate.bytes_per_record)
    estimate = estimate_job(size, sizing, records=10_000_000)
    assert estimate.route == "state-machine" and 150 <= estimate.chunks <= 200 and estimate.concurrency == 10
    assert 40 * 60 <= estimate.wall_s <= 80 * 60 and 0.5 <= estimate.cost_usd <= 1.5
    small = estimate_job(sizing.route_threshold_bytes, sizing)
    assert small.route == "direct" and small.wall_s <= 150
    assert default_rate("text-generation").records_per_s < 1
