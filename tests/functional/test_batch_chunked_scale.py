"""GIVEN a JSONL object far larger than one invocation can run WHEN the state machine's plan runs it locally (the
same plan, chunk and merge handler; a process pool for the Map; moto's S3 in a process of its own) THEN every
line gets its outcome, in order, identical to the direct path's; a chunk killed mid-way and run again changes
nothing; and memory does not grow with the object.

The scale tests use a tiny deterministic pipeline (tests/batch_fakes.py): what they measure is maas's record path,
S3 traffic and memory, not the model. test_batch_chunked.py runs the same path with the real minilm-embed model
on a smaller object (and its output against the direct path's, byte for byte).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from maas_dev.local_aws import free_port
from tests.batch_fakes import embedding

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BUCKET = "maas-local"
KEY = "inputs/tiny-embed/corpus.jsonl"
LINES = 1_000_000
PREFIX_LINES = 20_000
CHUNK_BYTES = 512 * 1024  # ~150 chunks of a million lines, ~15 of 100k: both runs use every merge path
MAX_LINE_BYTES = 2048
RUNS = "outputs/.runs/"  # one shared output prefix here; as deployed: outputs/<model>/.runs/
RESULTS: dict[str, Any] = {}  # measured figures, printed at the end of the module (pytest -s shows them)


def line_kind(number: int) -> str:
    """What line ``number`` (1-based) of the corpus is: mostly good, about 1 in 300 bad in one of four ways."""
    if number % 997 == 0:
        return "bad_json"
    if number % 1009 == 0:
        return "not_a_string"
    if number % 99991 == 0:
        return "too_long"
    if number % 1013 == 0:
        return "no_id"
    return "good"


def text_of(number: int) -> str:
    return f"record {number} of the corpus " + "word " * (number % 11)


def corpus_line(number: int) -> bytes:
    kind = line_kind(number)
    if kind == "bad_json":
        return b'{"id": %d, "inputs": "unterminated' % number
    if kind == "not_a_string":
        return json.dumps({"id": number, "inputs": number}).encode()
    if kind == "too_long":
        return json.dumps({"id": number, "inputs": "x" * 3000}).encode()
    if kind == "no_id":
        return json.dumps({"inputs": text_of(number)}).encode()
    return json.dumps({"id": number, "inputs": text_of(number)}).encode()


def write_corpus(path: Path, lines: int) -> None:
    with path.open("wb") as handle:
        for start in range(1, lines + 1, 10_000):
            handle.write(b"".join(corpus_line(n) + (b"\r\n" if n % 5 == 0 else b"\n")
                                  for n in range(start, min(start + 10_000, lines + 1))))


EXPECTED_CODES = {"bad_json": "malformed_record", "not_a_string": "invalid_input", "too_long": "payload_too_large",
                  "no_id": "malformed_record"}


def check_output(path: Path, lines: int) -> dict[str, int]:
    """Every output line is its input line's outcome, in order; returns the error codes counted."""
    codes: dict[str, int] = {}
    count = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            count += 1
            line = json.loads(raw)
            kind = line_kind(number)
            if kind == "good":
                text = text_of(number)
                assert line == {"id": number, "output": embedding(text)}
            else:
                assert line["line"] == number and line["error"]["code"] == EXPECTED_CODES[kind], (number, line)
                codes[line["error"]["code"]] = codes.get(line["error"]["code"], 0) + 1
    assert count == lines
    return codes


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 in a process of its own (its memory is not maas's)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    s3 = client(url)
    for _ in range(100):
        try:
            s3.list_buckets()
            break
        except Exception:
            time.sleep(0.2)
    s3.create_bucket(Bucket=BUCKET)
    yield url
    server.terminate()
    server.wait(timeout=30)


def client(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="local",
                        aws_secret_access_key="local")


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAAS_")}
    env.update({"MAAS_MODELS": "", "MAAS_BATCH_BUCKET": BUCKET, "MAAS_CHUNK_BYTES": str(CHUNK_BYTES),
                "MAAS_MAX_LINE_BYTES": str(MAX_LINE_BYTES), "PYTHONPATH": str(REPO), **extra})
    return env


def run_job(tmp: Path, url: str, key: str, *, upload: Path | None, out: Path | None, execution: str | None = None,
            env: dict[str, str] | None = None, wait: bool = True) -> subprocess.Popen[bytes] | dict[str, Any]:
    report = tmp / f"report-{time.monotonic_ns()}.json"
    if upload is not None:
        client(url).upload_file(str(upload), BUCKET, key)
    command = [sys.executable, "-m", "tests.functional.chunked_run", "--endpoint", url, "--key", key,
               "--report", str(report)]
    command += ["--out", str(out)] if out else []
    command += ["--execution", execution] if execution else []
    process = subprocess.Popen(command, cwd=REPO, env=env or environment(), start_new_session=True)
    if not wait:
        return process
    assert process.wait(timeout=1800) == 0
    data: dict[str, Any] = json.loads(report.read_text())
    return data


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory, endpoint: str) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("million")
    write_corpus(tmp / "corpus.jsonl", LINES)
    report = run_job(tmp, endpoint, KEY, upload=tmp / "corpus.jsonl", out=tmp / "out.jsonl")
    assert isinstance(report, dict)
    RESULTS["1M lines: seconds"] = round(report["seconds"], 1)
    RESULTS["1M lines: parent VmHWM MiB"] = round(report["parent_peak_kb"] / 1024, 1)
    RESULTS["1M lines: worker VmHWM MiB"] = round(report["worker_peak_kb"] / 1024, 1)
    return {"report": report, "out": tmp / "out.jsonl", "input": tmp / "corpus.jsonl", "tmp": tmp}


def test_a_million_lines_with_scattered_bad_lines_give_a_million_ordered_outcomes(million: dict[str, Any]) -> None:
    report = million["report"]
    assert report["plan"]["route"] == "chunks" and report["plan"]["chunks"] >= 100
    assert report["processed"] == report["plan"]["chunks"] and report["attempts"] == report["plan"]["chunks"]
    codes = check_output(million["out"], LINES)  # record errors are error lines: no chunk failed or was retried
    bad = sum(1 for n in range(1, LINES + 1) if line_kind(n) != "good")
    summary = report["summary"]
    assert summary["status"] == "completed"
    assert summary["counts"] == {"total": LINES, "succeeded": LINES - bad, "failed": bad}
    assert summary["errors_by_code"] == codes
    assert summary["run"]["chunks"] == report["plan"]["chunks"]


def test_the_chunked_output_is_the_direct_paths_on_a_shared_prefix(
    million: dict[str, Any], endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import functions.handlers.s3 as s3_module
    from maas_dev.batch_local import object_created_event
    from maas_dev.local_aws import aws_endpoint, local_context
    from tests.batch_fakes import tiny_registry

    for name, value in environment().items():
        if name.startswith("MAAS_"):
            monkeypatch.setenv(name, value)
    registry = tiny_registry()
    monkeypatch.setattr(s3_module, "get_registry", lambda: registry)
    prefix = million["tmp"] / "prefix.jsonl"
    with million["input"].open("rb") as source, prefix.open("wb") as target:
        for _ in range(PREFIX_LINES):
            target.write(source.readline())
    key = "inputs/tiny-embed/prefix.jsonl"
    with aws_endpoint(endpoint):
        s3 = boto3.client("s3")
        s3.upload_file(str(prefix), BUCKET, key)
        head = s3.head_object(Bucket=BUCKET, Key=key)
        event = object_created_event(BUCKET, key, etag=head["ETag"], size=head["ContentLength"])
        response = s3_module.handler(event, local_context())
        assert response["jobs"][0]["status"] == "completed"
        direct = s3.get_object(Bucket=BUCKET, Key="outputs/tiny-embed/prefix.jsonl")["Body"].read()
    with million["out"].open("rb") as handle:
        chunked = b"".join(handle.readline() for _ in range(PREFIX_LINES))
    assert direct.count(b"\n") == PREFIX_LINES and chunked == direct


def test_peak_memory_stays_flat_as_the_object_grows(million: dict[str, Any], endpoint: str, tmp_path: Path) -> None:
    write_corpus(tmp_path / "small.jsonl", LINES // 10)
    small = run_job(tmp_path, endpoint, "inputs/tiny-embed/small.jsonl", upload=tmp_path / "small.jsonl", out=None)
    assert isinstance(small, dict) and small["summary"]["counts"]["total"] == LINES // 10
    large = million["report"]
    RESULTS["100k lines: seconds"] = round(small["seconds"], 1)
    RESULTS["100k lines: parent VmHWM MiB"] = round(small["parent_peak_kb"] / 1024, 1)
    RESULTS["100k lines: worker VmHWM MiB"] = round(small["worker_peak_kb"] / 1024, 1)
    # ten times the lines (and the chunks): within 15% and 24 MiB of the small run, for the planner/merger and
    # for every worker alike
    for what in ("parent_peak_kb", "worker_peak_kb"):
        assert large[what] <= small[what] * 1.15 + 24 * 1024, (what, small[what], large[what])


def test_a_chunk_killed_mid_way_and_run_again_leaves_the_output_unchanged(endpoint: str, tmp_path: Path) -> None:
    lines = 60_000
    write_corpus(tmp_path / "killed.jsonl", lines)
    key, execution = "inputs/tiny-embed/killed.jsonl", "local:killed-then-redriven"
    # GIVEN a run whose model stalls on a record of a late chunk (while the chunks before it commit) ...
    stall = text_of(50_003)
    running = run_job(tmp_path, endpoint, key, upload=tmp_path / "killed.jsonl", out=None, execution=execution,
                      env=environment(MAAS_TEST_STALL_ON=stall, MAAS_CHUNK_BYTES=str(256 * 1024)), wait=False)
    assert isinstance(running, subprocess.Popen)
    s3 = client(endpoint)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and running.poll() is None:
            pages = s3.list_objects_v2(Bucket=BUCKET, Prefix=RUNS)
            if sum(o["Key"].endswith(".json") and "/parts/" in o["Key"] for o in pages.get("Contents", [])) >= 8:
                break
            time.sleep(0.5)
        time.sleep(2)  # the stalled chunk is mid-way through its records
    finally:
        # ... WHEN the whole run is killed (the planner and every worker) ...
        os.killpg(running.pid, signal.SIGKILL)
        running.wait(timeout=60)
    pages = s3.list_objects_v2(Bucket=BUCKET, Prefix=RUNS)
    markers = [o["Key"] for o in pages.get("Contents", []) if o["Key"].endswith(".json") and "/parts/" in o["Key"]]
    assert len(markers) >= 8, markers
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_object(Bucket=BUCKET, Key="outputs/tiny-embed/killed.jsonl")
    # ... and run again as the same execution (a redrive)
    again = run_job(tmp_path, endpoint, key, upload=None, out=tmp_path / "resumed.jsonl", execution=execution,
                    env=environment(MAAS_CHUNK_BYTES=str(256 * 1024)))
    assert isinstance(again, dict)
    chunks = again["plan"]["chunks"]
    # THEN only the chunks without a committed output ran, and the output is an uninterrupted run's, byte for byte
    assert again["skipped"] == len(markers) and again["processed"] == chunks - len(markers)
    uninterrupted = run_job(tmp_path, endpoint, "inputs/tiny-embed/whole.jsonl", upload=tmp_path / "killed.jsonl",
                            out=tmp_path / "whole.jsonl", env=environment(MAAS_CHUNK_BYTES=str(256 * 1024)))
    assert isinstance(uninterrupted, dict) and uninterrupted["plan"]["chunks"] == chunks
    assert (tmp_path / "resumed.jsonl").read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    check_output(tmp_path / "resumed.jsonl", lines)
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix=again["plan"]["run"]["prefix"]).get("Contents")


def test_an_infrastructure_fault_fails_its_chunk_which_is_retried_and_changes_nothing(
    endpoint: str, tmp_path: Path
) -> None:
    """Record errors are error lines (no chunk fails for them); a fault of the system (the runtime crashing) fails
    the chunk it hit, the Map's retry runs it again, and the output is what an unfaulted run writes."""
    lines = 20_000
    write_corpus(tmp_path / "faulty.jsonl", lines)
    env = environment(MAAS_CHUNK_BYTES=str(128 * 1024), MAAS_TEST_CRASH_ONCE_ON=text_of(12_345),
                      MAAS_TEST_CRASH_FLAG=str(tmp_path / "crashed"))
    faulted = run_job(tmp_path, endpoint, "inputs/tiny-embed/faulty.jsonl", upload=tmp_path / "faulty.jsonl",
                      out=tmp_path / "faulty.out.jsonl", env=env)
    assert isinstance(faulted, dict) and (tmp_path / "crashed").exists()
    chunks = faulted["plan"]["chunks"]
    assert faulted["attempts"] == chunks + 1 and faulted["processed"] == chunks  # one chunk ran twice
    clean = run_job(tmp_path, endpoint, "inputs/tiny-embed/clean.jsonl", upload=tmp_path / "faulty.jsonl",
                    out=tmp_path / "clean.out.jsonl", env=environment(MAAS_CHUNK_BYTES=str(128 * 1024)))
    assert isinstance(clean, dict) and clean["attempts"] == chunks
    assert (tmp_path / "faulty.out.jsonl").read_bytes() == (tmp_path / "clean.out.jsonl").read_bytes()
    check_output(tmp_path / "faulty.out.jsonl", lines)


def test_zz_report_the_measured_figures() -> None:
    print("\nchunked S3 job, tiny pipeline, 2 workers:", json.dumps(RESULTS, indent=1))
