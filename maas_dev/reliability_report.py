"""Regenerate docs/reliability.md: run tests/reliability, then render the figures its tests recorded.

    python -m maas_dev.reliability_report            # the CI-sized run (a few minutes)
    python -m maas_dev.reliability_report --full     # ≥1,000 fuzz cases, minutes-long load phases
    python -m maas_dev.reliability_report --no-run   # re-render from build/reliability/*.json

Every figure is written by a test (``record(section, name, value)`` in tests/reliability/conftest.py) into
``build/reliability/<section>.json`` with the test's node id; this module only formats them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "build" / "reliability"
DOC = REPO_ROOT / "docs" / "reliability.md"
SECTIONS = {
    "limits": "Input limits: at the limit and at limit + 1",
    "fuzz": "Fuzzing: schemathesis and hypothesis",
    "load": "Load and overload (locust headless, loopback)",
    "batch": "Duplicate and out-of-order deliveries",
    "faults": "Faults injected vs records lost",
    "integrity": "Corrupt and hostile artifacts",
    "access": "Access: API keys, allow-lists, bucket owner",
    "compliance": "Static gates: cdk-nag, cfn-lint, pip-audit",
    "hostile": "Hostile input: no bad request, record or image can hurt anyone else",
}
HOSTILE_CLASSES = [  # the classes of issue 15, each with where it is handled and the tests that prove it
    ("Slow or idle request bodies", "read whole before admission, under `MAAS_BODY_TIMEOUT_S` (408 + "
     "`Connection: close`), at most `MAAS_MAX_BODY_READERS` at once (429)", "`test_hostile_http.py`"),
    ("Input a decoder cannot follow (lone surrogates, integers over 4,300 digits, nesting ≥ 1,000 deep, "
     "overflowing shapes and values)", "each decoder's own error becomes that input's 4xx or error line; error "
     "bodies always encode (U+FFFD for lone surrogates)", "`test_hostile_http.py`, `test_hostile_batch.py`, "
     "`test_oip_codec.py`, `test_lambda_events.py`"),
    ("One bad record in a batch", "prepared alone (the batching core); an S3 line that cannot be read or "
     "written is its own error line; SQS records are tracked by position, never by messageId alone",
     "`test_hostile_batch.py` (hypothesis), `test_microbatch.py`"),
    ("Images that decode big", "decoded bytes checked from the header (w × h × bytes per pixel, ×4 for WebP); "
     "large images converted in bands over the crop's region only; memory handed back (`malloc_trim`)",
     "`test_hostile_images.py`, `test_image_preprocessing.py`"),
    ("Image manifests", "the model's own `max_image_bytes`, refused from the length unread; a window holds at most "
     "a quarter of the function's memory (`MAAS_BATCH_MEMORY_MB` or the Lambda context)", "`test_hostile_images.py`, "
     "`test_s3_batch.py`"),
    ("Chat role injection", "message contents tokenized as plain text, joined with the template's control-token "
     "ids", "`test_generation.py`"),
    ("Work for a client that left", "a disconnect is flagged to the request's worker thread; work stops before "
     "the next input or token", "`test_hostile_images.py`"),
    ("Malformed Lambda events", "400 in the route's protocol shape, never a raised handler",
     "`test_lambda_events.py`"),
]  # fmt: skip
Records = dict[str, dict[str, dict[str, Any]]]


def run_tests(full: bool) -> dict[str, int]:
    """Run tests/reliability from a clean figure directory; return pytest's outcome counts."""
    if OUT_DIR.exists():
        for path in OUT_DIR.glob("*.json"):
            path.unlink()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    junit = OUT_DIR / "junit.xml"
    env = {**os.environ, "MAAS_RELIABILITY_FULL": "1" if full else "0"}
    command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False)
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["exit_code"] = done.returncode
    return counts


def load_records() -> Records:
    return {
        path.stem: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(OUT_DIR.glob("*.json"))
        if path.stem in SECTIONS
    }


def fmt(value: Any) -> str:
    """A compact, table-safe rendering of a recorded value."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def cite(node: str) -> str:
    path, _, name = node.partition("::")
    return f"`{Path(path).name}::{name}`"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _limits_table(records: dict[str, dict[str, Any]]) -> list[str]:
    rows, other = [], {}
    for name, entry in records.items():
        value = entry["value"]
        if isinstance(value, dict) and {"limit", "at_limit", "over_limit"} <= set(value):
            rows.append([name, fmt(value["limit"]), fmt(value["at_limit"]), fmt(value["over_limit"]),
                         cite(entry["test"]) + (f" — {entry['note']}" if entry["note"] else "")])  # fmt: skip
        else:
            other[name] = entry
    lines = _rows(["limit", "value", "at the limit", "limit + 1", "test"], rows)
    return lines + (["", *_generic_table(other)] if other else [])


def _load_table(records: dict[str, dict[str, Any]]) -> list[str]:
    rows, other = [], {}
    for name, entry in records.items():
        value = entry["value"]
        if isinstance(value, dict) and "admitted_ms" in value:
            admitted, refused = value["admitted_ms"], value["refused_ms"]
            rows.append([
                name, fmt(value["users"]), fmt(value["requests"]), fmt(value["rps"]), fmt(value["errors"]),
                f"{fmt(value['admitted'])}: p50 {fmt(admitted['50'])} / p95 {fmt(admitted['95'])} / "
                f"p99 {fmt(admitted['99'])} ms",
                f"{fmt(value['refused_429'])} × 429, {fmt(value['refused_503'])} × 503"
                + (f": p95 {fmt(refused['95'])} ms" if refused["95"] is not None else ""),
                cite(entry["test"]),
            ])  # fmt: skip
        else:
            other[name] = entry
    lines = _rows(["phase", "users", "requests", "req/s", "errors", "admitted (latency)", "refused", "test"], rows)
    return lines + (["", *_generic_table(other)] if other else [])


def _generic_table(records: dict[str, dict[str, Any]]) -> list[str]:
    rows = [
        [name, fmt(entry["value"]), cite(entry["test"]) + (f" — {fmt(entry['note'])}" if entry["note"] else "")]
        for name, entry in records.items()
    ]
    return _rows(["figure", "value", "test"], rows)


def _get(records: Records, section: str, name: str) -> dict[str, Any]:
    value: dict[str, Any] = records.get(section, {}).get(name, {}).get("value", {})
    return value


def headline(records: Records) -> list[str]:
    """The issue's 'done when' list, each with its figure."""
    limits = [e["value"] for e in records.get("limits", {}).values() if "over_limit" in e.get("value", {})]
    refused_over = sum(1 for v in limits if str(v["over_limit"]) != "200")
    fuzz = _get(records, "fuzz", "schemathesis (full run)") or _get(records, "fuzz", "schemathesis (CI run)")
    held = _get(records, "load", "sustained at the cap")
    over = _get(records, "load", "overload at 2x the cap")
    sqs_dup = _get(records, "batch", "SQS: duplicate + out-of-order deliveries")
    s3_dup = _get(records, "batch", "S3: duplicate + out-of-order events (versioned objects)")
    sqs_faults = _get(records, "faults", "SQS: S3 faults on result writes")
    s3_faults = [e["value"] for n, e in records.get("faults", {}).items() if n.startswith("S3 job:")]
    integrity = list(records.get("integrity", {}).values())
    hostile = _get(records, "access", "hostile reply_to URIs refused")
    keys = _get(records, "access", "requests without a valid x-api-key refused")
    nag = _get(records, "compliance", "cdk-nag AwsSolutions (default catalog)")
    lint = _get(records, "compliance", "cfn-lint (default catalog)")
    audit = _get(records, "compliance", "pip-audit (installed environment)") or _get(records, "compliance", "pip-audit")
    idle = _get(records, "hostile", "idle and slow uploads vs a good request")
    worst = _get(records, "hostile", "worst accepted image")
    manifest = _get(records, "hostile", "S3 image manifest: 128 lines naming one 19 MiB image")
    manifest_ok = _get(records, "hostile", "S3 image manifest: 128 lines naming one 7 MiB image")
    hostile_records = _get(records, "hostile", "hypothesis: hostile S3 and SQS records")
    rows = [
        ["schemathesis cases / 5xx seen (target 0)",
         f"{fmt(fuzz.get('cases'))} cases over {fmt(fuzz.get('operations'))} operations; "
         f"5xx: {fmt(fuzz.get('responses_5xx'))}; failed checks: {fmt(fuzz.get('failures'))}"],
        ["limits at limit / limit + 1",
         f"{len(limits)} boundaries: at the limit accepted, limit + 1 refused in {refused_over} "
         f"(the rest truncate by design)"],
        ["load held", f"{fmt(held.get('requests'))} requests at concurrency {fmt(held.get('users'))}, "
         f"errors {fmt(held.get('errors'))}, p95 {fmt(held.get('admitted_ms', {}).get('95'))} ms, "
         f"p99 {fmt(held.get('admitted_ms', {}).get('99'))} ms"],
        ["overload (2× the cap)", f"{fmt(over.get('refused_429'))} refused with 429 "
         f"(p95 {fmt(over.get('refused_ms', {}).get('95'))} ms), {fmt(over.get('admitted'))} admitted "
         f"(p95 {fmt(over.get('admitted_ms', {}).get('95'))} ms), errors {fmt(over.get('errors'))}"],
        ["duplicates / out of order → results",
         f"SQS: {fmt(sqs_dup.get('deliveries'))} deliveries of {fmt(sqs_dup.get('messages'))} messages → "
         f"{fmt(sqs_dup.get('results'))} results, each written {fmt(sqs_dup.get('result_writes_max'))}×; "
         f"S3: {fmt(s3_dup.get('events_delivered'))} events → {fmt(s3_dup.get('results'))} results, "
         f"stale overwrites {fmt(s3_dup.get('stale_overwrites'))}"],
        ["faults injected → records lost",
         f"SQS: in {fmt(sqs_faults.get('messages_in'))} = out {fmt(sqs_faults.get('results_out'))} + DLQ "
         f"{fmt(sqs_faults.get('dlq'))}, lost {fmt(sqs_faults.get('lost'))}; S3 jobs: {len(s3_faults)} fault "
         f"kinds, lost {sum(int(v.get('lost', 0)) for v in s3_faults)}"],
        ["corrupt artifacts refused", f"{sum(1 for e in integrity if e['value'].get('refused'))} of "
         f"{len(integrity)} refused, served {sum(1 for e in integrity if e['value'].get('served'))}"],
        ["hostile URIs refused", f"{fmt(hostile.get('refused'))} of {fmt(hostile.get('of'))}, "
         f"S3 calls {fmt(hostile.get('s3_calls'))}; bad API keys refused {fmt(keys.get('refused'))} of "
         f"{fmt(keys.get('of'))}"],
        ["idle uploads vs a good request (issue 15)",
         f"{fmt(idle.get('idle_connections'))} idle connections: good request {fmt(idle.get('good_request_status'))} "
         f"in {fmt(idle.get('good_request_ms'))} ms; idle ones {fmt(idle.get('idle_answered'))}"],
        ["worst accepted image (≤ 300 MB, ≤ 2 s)",
         f"+{fmt(worst.get('peak_mb'))} MB ({fmt(worst.get('by_memory'))}); {fmt(worst.get('seconds'))} s "
         f"({fmt(worst.get('by_time'))})"],
        ["S3 image manifest peak memory",
         f"19 MiB × 128 lines: +{fmt(manifest.get('handler_peak_mb'))} MB (refused unread); 7 MiB × 128: "
         f"+{fmt(manifest_ok.get('handler_peak_mb'))} MB (budget {fmt(manifest_ok.get('image_budget_mb'))} MB)"],
        ["hostile records → one outcome each", f"{fmt(hostile_records.get('examples_per_property'))} examples per "
         f"property (S3 and SQS), lost {fmt(hostile_records.get('lost'))}"],
        ["cdk-nag / cfn-lint / pip-audit", f"cdk-nag unacknowledged {fmt(nag.get('unacknowledged'))} "
         f"({fmt(nag.get('acknowledged_with_reason'))} acknowledged with reasons); cfn-lint errors "
         f"{fmt(lint.get('errors'))}; pip-audit {fmt(audit.get('vulnerabilities', audit.get('status')))}"],
    ]  # fmt: skip
    return _rows(["done when", "figure"], rows)


_KNOBS = {  # setting → what it bounds (defaults are read from the settings classes, so they stay true)
    "api_keys": "keys accepted in x-api-key; required by `maas serve` beyond loopback",
    "max_concurrency": "requests in flight per process (0 = no cap)",
    "max_queue": "requests waiting for a slot; beyond: 429 at once",
    "queue_timeout_s": "longest wait for a slot; then 503 + Retry-After",
    "max_request_bytes": "request body, as sent and once decompressed (413)",
    "expected_bucket_owner": "ExpectedBucketOwner on S3 calls (artifacts and batch)",
    "max_object_bytes": "S3 batch input object",
    "max_line_bytes": "one JSONL/CSV line of a batch input",
    "reply_allowlist": "where SQS results may be written",
    "body_timeout_s": "seconds for a request body to arrive whole (408 + Connection: close); read before admission",
    "max_body_readers": "request bodies in transit at once (0 = no cap); beyond: 429",
    "batch_memory_mb": "function memory a batch job may use a quarter of for input (0 = the Lambda context's)",
}


def knobs() -> list[str]:
    """The settings that bound what a caller can ask, with their defaults."""
    from functions.settings import Settings

    rows, seen = [], set()
    for cls in (Settings, Settings):
        for name, field in cls.model_fields.items():
            if name in _KNOBS and name not in seen:
                seen.add(name)
                default = field.default
                shown = "(empty)" if str(default) in ("", "**********", "None") else fmt(default)
                rows.append([f"`MAAS_{name.upper()}`", shown, _KNOBS[name]])
    notes = [
        "Per model (catalog `limits`, enforced from the artifact manifest): `max_batch` inputs per request, "
        "`max_seq_len` tokens per input (truncated or 413 with `truncate=false`), `max_input_chars` characters per "
        "input; generation adds `max_new_tokens` and the context length; images `max_image_bytes`/`max_image_pixels` "
        "(decoded bytes at most `max_image_pixels` × 4), on HTTP and in S3 batch jobs alike."
    ]  # fmt: skip
    return ["### Limits and access settings", "", *_rows(["setting", "default", "bounds"], rows), "", *notes]


def render(records: Records, counts: dict[str, int] | None, full: bool) -> str:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        "# Reliability and security: figures",
        "",
        f"Generated by `make reliability{'-full' if full else ''}` (`python -m maas_dev.reliability_report"
        + (" --full" if full else "") + f"`) on {stamp}: {platform.machine()}, {cpus} CPUs, Python "
        f"{platform.python_version()}. Each figure names the test in `tests/reliability/` that produced it; "
        "rerun with `--full` for ≥1,000 fuzz cases and minutes-long load phases (`make reliability-full`).",
        "",
    ]  # fmt: skip
    if counts is not None:
        lines += [
            f"Run: {'full' if full else 'CI-sized'}; {counts['tests']} tests, {counts['failures']} failed, "
            f"{counts['errors']} errors, {counts['skipped']} skipped (pytest exit code {counts['exit_code']}).",
            "",
        ]
    lines += ["## Summary", "", *headline(records), "", *knobs(), ""]
    for section, title in SECTIONS.items():
        if section not in records:
            continue
        lines += [f"## {title}", ""]
        if section == "hostile":
            lines += [*_rows(["class", "how it is contained", "tests"], [list(c) for c in HOSTILE_CLASSES]), ""]
        table = {"limits": _limits_table, "load": _load_table}.get(section, _generic_table)
        lines += [*table(records[section]), ""]
    gaps = [
        f"- {entry['note'].removeprefix('GAP').strip(' :')} ({name}; {cite(entry['test'])})"
        for section in records.values()
        for name, entry in section.items()
        if entry["note"].startswith("GAP")
    ]
    if gaps:
        lines += ["## Known gaps (found by these tests)", "", *gaps, ""]
    lines += [
        "## How the figures are produced",
        "",
        "- Limits, access and artifact tests drive the real app in-process (FastAPI TestClient) and the Lambda "
        "handlers with real-shaped events against moto.",
        "- Fuzzing runs the schemathesis CLI (examples, coverage, fuzzing and stateful phases) against a uvicorn "
        "server on 127.0.0.1 that serves the session's built artifacts; statuses come from its HAR report.",
        "- Load runs `maas serve` in its own process with `MAAS_MAX_CONCURRENCY` set and drives it with locust "
        "headless (`tests/reliability/locustfile.py`); the locustfile's exit code enforces the thresholds.",
        "- SQS redelivery is played by the test (moto runs no event source mapping): receive, invoke, delete what "
        "succeeded, let the rest return until the redrive policy moves it to the DLQ. S3 faults are injected in "
        "botocore's `before-send`, below its retry loop.",
        "- Image and image-manifest costs are measured in a fresh process (`tests/reliability/image_cost.py`, "
        "`manifest_memory.py`): peak RSS (VmHWM, reset through /proc/self/clear_refs) above the process's RSS just "
        "before; the manifest job reads from a moto server in the parent process, so only the handler is counted. "
        "Idle uploads, keep-alive and hang-ups use raw sockets against a uvicorn server on 127.0.0.1.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="long variants (≥1,000 fuzz cases, long load)")
    parser.add_argument("--no-run", action="store_true", help="only re-render from build/reliability/*.json")
    args = parser.parse_args(argv)
    counts = None if args.no_run else run_tests(args.full)
    DOC.write_text(render(load_records(), counts, args.full) + "\n", encoding="utf-8")
    print(f"wrote {DOC.relative_to(REPO_ROOT)}")
    return 0 if counts is None or (counts["failures"] == 0 and counts["errors"] == 0) else 1


if __name__ == "__main__":
    raise SystemExit(main())
