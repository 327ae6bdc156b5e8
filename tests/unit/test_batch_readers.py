"""Streaming readers: bounded line splitting, and one record (or error record) per input line."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from functions.batch.readers import (
    InputFormat,
    OversizedLine,
    detect_format,
    iter_lines,
    output_name,
    read_csv,
    read_jsonl,
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(  # non-empty: an empty line ended by CR before an LF would read as one CRLF
        st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")).filter(bool),
        max_size=30,
    ),
    endings=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_lines_do_not_depend_on_how_the_stream_is_chunked(lines, endings, cuts):
    # GIVEN any lines ending in LF, CRLF or a bare CR, mixed, and any chunking of the body (a CRLF may be cut)
    data = b"".join(line + endings[i % len(endings)] for i, line in enumerate(lines))
    got = list(iter_lines(chunked(data, cuts), max_line_bytes=1024))
    # THEN the lines are the body's lines
    assert got == lines


def test_oversized_line_is_reported_not_buffered():
    # GIVEN a 1 MB line between two short ones, streamed in 1 KB chunks
    data = b"first\n" + b"x" * 1_000_000 + b"\nlast"
    got = list(iter_lines((data[i:i + 1024] for i in range(0, len(data), 1024)), max_line_bytes=4096))
    # THEN the long line is replaced by its size and the neighbours survive
    assert got == [b"first", OversizedLine(1_000_000), b"last"]


def test_crlf_and_bare_cr_end_lines():
    assert list(iter_lines([b"a\r\nb\r\n"], max_line_bytes=10)) == [b"a", b"b"]
    assert list(iter_lines([b"a\rb\rc"], max_line_bytes=10)) == [b"a", b"b", b"c"]  # classic Mac, some exports


def jsonl(*lines: bytes) -> list:
    return list(read_jsonl(iter_lines([b"\n".join(lines)], 1 << 16), max_line_bytes=1 << 16))


def test_jsonl_good_lines_become_work_items():
    (record,) = jsonl(b'{"id": "a", "inputs": "hello", "parameters": {"normalize": false}, "meta": 1}')
    assert record.error is None and record.id == "a"
    assert record.item.inputs == ["hello"] and record.item.parameters == {"normalize": False}


def test_jsonl_every_malformed_line_names_its_problem():
    records = jsonl(
        b'{"id": 1, "inputs": "ok"}',
        b'{"id": 2, "inputs": "unterminated',
        b'["not", "an", "object"]',
        b'{"inputs": "no id"}',
        b'{"id": true, "inputs": "bool id"}',
        b'{"id": 6}',
        b'{"id": 7, "inputs": "x", "parameters": [1]}',
        b"\xff\xfe not utf-8",
        b"   ",  # blank: not a record
        b'{"id": 10, "inputs": "ok"}',
    )
    assert [r.line for r in records] == [1, 2, 3, 4, 5, 6, 7, 8, 10]
    messages = [r.error.message if r.error else None for r in records]
    assert messages[0] is None and messages[-1] is None
    assert "not valid JSON" in messages[1]
    assert "must be a JSON object" in messages[2]
    assert "needs an 'id'" in messages[3] and "needs an 'id'" in messages[4]
    assert "no 'inputs'" in messages[5]
    assert "'parameters' must be an object" in messages[6]
    assert "not UTF-8" in messages[7]
    assert records[5].id == 6  # the id is kept whenever it could be read


def test_jsonl_image_manifest_line_defers_the_fetch():
    (record,) = jsonl(json.dumps({"id": "cat", "image": "images/cat.png"}).encode())
    assert record.image_key == "images/cat.png" and record.error is None


def csv_records(text: str, **kw):
    options = {"text_column": "text", "id_column": "id", "max_line_bytes": 1 << 16, **kw}
    return list(read_csv(iter_lines([text.encode()], 1 << 16), **options))


def test_csv_rows_with_and_without_ids():
    records = csv_records('\ufeffid,text\nr1,"hello, world"\n,second\nr3,"broken\n')
    assert [(r.line, r.id) for r in records] == [(2, "r1"), (3, 2), (4, 3)]
    assert records[0].item.inputs == ["hello, world"]
    assert "not a valid CSV row" in records[2].error.message


def test_csv_without_the_text_column_fails_every_row_with_the_reason():
    records = csv_records("id,body\n1,a\n2,b\n")
    assert len(records) == 2
    assert all("no 'text' column (columns: id, body)" in r.error.message for r in records)


def test_formats_and_output_names():
    assert detect_format("a/b.JSONL") is InputFormat.JSONL
    assert detect_format("rows.csv") is InputFormat.CSV
    assert detect_format("cat.png") is InputFormat.IMAGE
    assert detect_format("notes.txt") is None
    assert output_name("x.jsonl", InputFormat.JSONL) == "x.jsonl"
    assert output_name("rows.csv", InputFormat.CSV) == "rows.csv.jsonl"
