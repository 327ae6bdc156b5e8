"""Schemathesis against the live app's own /openapi.json: every operation, positive and negative data.

Runs the schemathesis CLI (examples, coverage, fuzzing and stateful phases) against the session's loopback
uvicorn server and reads its JSON report (cases, failures) and HAR (every response's status). CI runs a
bounded number of examples per operation with a fixed seed; ``MAAS_RELIABILITY_FULL=1`` runs ≥1,000 cases
with a fresh seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import FULL, OUT_DIR

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
CHECKS = [
    "not_a_server_error",
    "response_schema_conformance",
    "negative_data_rejection",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "missing_required_header",
]
MAX_EXAMPLES = 100 if FULL else 8
SEED = os.environ.get("MAAS_FUZZ_SEED", "" if FULL else "20260707")


def run_schemathesis(url: str) -> tuple[int, str, dict[str, Any], list[dict[str, Any]]]:
    reports = OUT_DIR / "schemathesis"
    reports.mkdir(parents=True, exist_ok=True)
    report, har = reports / "report.json", reports / "responses.har.json"
    for path in (report, har):
        path.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
        "--checks", ",".join(CHECKS), "--max-examples", str(MAX_EXAMPLES), "--generation-database", "none",
        "--report", "json,har", "--report-json-path", str(report), "--report-har-path", str(har), "--no-color",
    ]  # fmt: skip
    if SEED:
        command += ["--seed", SEED]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800 if FULL else 240, check=False)
    assert report.is_file(), done.stdout[-4000:] + done.stderr[-2000:]
    entries = json.loads(har.read_text())["log"]["entries"] if har.is_file() else []
    return done.returncode, done.stdout, json.loads(report.read_text()), entries


def test_schemathesis_finds_no_server_error_and_no_contract_violation(live_server, record):
    # WHEN schemathesis exercises every operation of the served schema
    code, output, report, entries = run_schemathesis(live_server)
    statuses = Counter(entry["response"]["status"] for entry in entries)
    server_errors = sum(n for status, n in statuses.items() if status >= 500)
    cases = report["test_cases"]["generated"]
    record(
        "fuzz",
        "schemathesis (full run)" if FULL else "schemathesis (CI run)",
        {
            "operations": report["operations"]["tested"],
            "cases": cases,
            "requests": len(entries),
            "failures": report["test_cases"]["with_failures"],
            "responses_5xx": server_errors,
            "statuses": dict(sorted(statuses.items())),
            "max_examples_per_operation": MAX_EXAMPLES,
            "seed": report.get("seed"),
            "seconds": round(report.get("running_time", 0), 1),
        },
        "checks: " + ", ".join(CHECKS),
    )
    # THEN no 5xx, no failed check, every operation tested
    assert server_errors == 0, statuses
    assert code == 0 and report["test_cases"]["with_failures"] == 0, output[-6000:]
    assert report["operations"]["tested"] == report["operations"]["total"], report["operations"]
    if FULL:
        assert cases >= 1000, cases
