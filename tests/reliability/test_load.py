"""Load on `maas serve` over loopback with locust (headless, exit-code thresholds): held, then overloaded.

The server is the real CLI in its own process, with admission control set to a cap of C requests in flight
and no queue. Phase 1 runs C users back to back: every request must be admitted (0 errors, 0 refusals).
Phase 2 runs 2C users: the excess must be refused with 429 fast, while the admitted requests stay within
their latency target. CI runs short phases; ``MAAS_RELIABILITY_FULL=1`` runs minutes-long ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import FULL, OUT_DIR

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CAP = int(os.environ.get("MAAS_LOAD_CAP", "4"))
SUSTAIN_S = 120 if FULL else 12
OVERLOAD_S = 60 if FULL else 8
# Targets for one short sentence per request on a shared 2-core machine: generous, the figures are reported.
ADMITTED_P95_MS = float(os.environ.get("MAAS_LOAD_P95_MS", "1000"))
REFUSAL_P95_MS = float(os.environ.get("MAAS_LOAD_REFUSAL_P95_MS", "250"))
_results: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def served(built_artifacts) -> Iterator[str]:
    from maas_dev.server import free_port

    port = free_port()
    env = {
        **os.environ,
        "MAAS_MAX_CONCURRENCY": str(CAP),
        "MAAS_MAX_QUEUE": "0",
        "MAAS_QUEUE_TIMEOUT_S": "5",
        "POWERTOOLS_LOG_LEVEL": "ERROR",
    }
    env.pop("MAAS_API_KEYS", None)
    command = [
        str(BIN / "maas"),
        "serve",
        str(built_artifacts["minilm-embed"]),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"maas serve exited: {process.stderr.read().decode()[-2000:] if process.stderr else ''}"
                )
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("maas serve did not become ready in 120 s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def run_locust(url: str, users: int, seconds: int, name: str, **thresholds: str) -> tuple[int, dict[str, Any]]:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"load-{name}.raw.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "MAAS_LOAD_OUT": str(out), **thresholds}
    command = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{seconds}s",
        "-H",
        url,
        "--stop-timeout",
        "5",
        "--loglevel",
        "WARNING",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 90, check=False)
    assert out.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode, json.loads(out.read_text())


def test_sustained_load_at_the_cap_has_no_errors(served, record):
    # GIVEN C users sending back to back (C = the concurrency cap)
    code, summary = run_locust(
        served, CAP, SUSTAIN_S, "sustained", MAAS_LOAD_MAX_ERRORS="0", MAAS_LOAD_P95_MS=str(ADMITTED_P95_MS)
    )
    record(
        "load",
        "sustained at the cap",
        {"users": CAP, **summary},
        f"locust headless {SUSTAIN_S}s vs maas serve (MAAS_MAX_CONCURRENCY={CAP}); exit code {code}",
    )
    # THEN every request is admitted and answered, within the latency target (locust's exit code says so)
    assert summary["errors"] == 0 and summary["refused_429"] == summary["refused_503"] == 0, summary
    assert summary["requests"] > 0 and code == 0, summary
    _results["sustained"] = summary


def test_at_twice_the_cap_the_excess_gets_429_quickly(served, record):
    code, summary = run_locust(
        served,
        2 * CAP,
        OVERLOAD_S,
        "overload",
        MAAS_LOAD_ALLOW_REFUSALS="1",
        MAAS_LOAD_MAX_ERRORS="0",
        MAAS_LOAD_P95_MS=str(ADMITTED_P95_MS),
        MAAS_LOAD_REFUSAL_P95_MS=str(REFUSAL_P95_MS),
    )
    record(
        "load",
        "overload at 2x the cap",
        {"users": 2 * CAP, "cap": CAP, **summary},
        f"locust headless {OVERLOAD_S}s; refused requests are answered 429 without touching the model; "
        f"exit code {code}",
    )
    assert summary["errors"] == 0, summary
    assert summary["refused_429"] > 0 and summary["admitted"] > 0, summary
    assert code == 0, summary  # admitted p95 and refusal p95 within their targets
    held = _results.get("sustained")
    if held:  # reported, not asserted: on a shared 2-core machine the two phases see different neighbours
        ratio = summary["admitted_ms"]["95"] / held["admitted_ms"]["95"]
        record(
            "load",
            "overload: admitted p95 vs sustained p95",
            {
                "ratio": round(ratio, 2),
                "sustained_p95_ms": held["admitted_ms"]["95"],
                "overload_p95_ms": summary["admitted_ms"]["95"],
            },
        )
