"""Locust load profile for `maas serve` on loopback; driven headless by tests/reliability/test_load.py.

Every request is classified by status: 200 = admitted, 429/503 = refused by admission control (a success
when ``MAAS_LOAD_ALLOW_REFUSALS=1``, the overload phase; the client then backs off ~50 ms, as a client
honouring 429 would), anything else = an error. On exit the latencies
per class are written to ``MAAS_LOAD_OUT`` (JSON) and the process exit code says whether the thresholds held:

    MAAS_LOAD_MAX_ERRORS (0)  MAAS_LOAD_P95_MS (admitted)  MAAS_LOAD_REFUSAL_P95_MS (refused)

By hand (server first: `MAAS_MAX_CONCURRENCY=4 maas serve minilm-embed`):

    locust -f tests/reliability/locustfile.py --headless -u 4 -r 4 -t 60s -H http://127.0.0.1:8080
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, events, task

MODEL = os.environ.get("MAAS_LOAD_MODEL", "minilm-embed")
ALLOW_REFUSALS = os.environ.get("MAAS_LOAD_ALLOW_REFUSALS", "0") == "1"
REFUSAL_BACKOFF_S = float(os.environ.get("MAAS_LOAD_REFUSAL_BACKOFF_S", "0.05"))
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password?",
    "Serverless inference keeps idle costs at zero.",
    "A man is riding a horse on the beach at sunset.",
]
_samples: list[tuple[int, float]] = []  # (status, milliseconds)
_started = time.monotonic()


class PredictUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self) -> None:
        text = SENTENCES[len(_samples) % len(SENTENCES)]
        with self.client.post(
            f"/models/{MODEL}/predict", json={"inputs": [text]}, name="predict", catch_response=True
        ) as response:
            refused = response.status_code in (429, 503)
            if response.status_code == 200 or (refused and ALLOW_REFUSALS):
                response.success()
            else:
                response.failure(f"status {response.status_code}")
        if refused:  # a well-behaved client backs off instead of hammering (jittered, shorter than Retry-After)
            gevent.sleep(REFUSAL_BACKOFF_S * (0.5 + random.random()))


@events.test_start.add_listener
def _start(**_: Any) -> None:
    global _started
    _samples.clear()
    _started = time.monotonic()


@events.request.add_listener
def _collect(response_time: float, response: Any = None, exception: Any = None, **_: Any) -> None:
    status = getattr(response, "status_code", 0) if exception is None or response is not None else 0
    _samples.append((int(status or 0), float(response_time)))


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))  # nearest rank
    return round(ordered[rank], 2)


def summarize(samples: list[tuple[int, float]], seconds: float) -> dict[str, Any]:
    admitted = [ms for status, ms in samples if status == 200]
    refused = [ms for status, ms in samples if status in (429, 503)]
    errors = [status for status, _ in samples if status not in (200, 429, 503)]
    return {
        "requests": len(samples),
        "seconds": round(seconds, 1),
        "rps": round(len(samples) / seconds, 1) if seconds else None,
        "admitted": len(admitted),
        "refused_429": sum(1 for status, _ in samples if status == 429),
        "refused_503": sum(1 for status, _ in samples if status == 503),
        "errors": len(errors),
        "error_statuses": sorted(set(errors)),
        "admitted_ms": {q: percentile(admitted, float(q)) for q in ("50", "95", "99")}
        | {"max": max(admitted, default=None)},
        "refused_ms": {q: percentile(refused, float(q)) for q in ("50", "95", "99")}
        | {"max": max(refused, default=None)},
    }


@events.quitting.add_listener
def _report(environment: Any, **_: Any) -> None:
    summary = summarize(_samples, time.monotonic() - _started)
    out = os.environ.get("MAAS_LOAD_OUT")
    if out:
        Path(out).write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    problems = []
    if summary["errors"] > int(os.environ.get("MAAS_LOAD_MAX_ERRORS", "0")):
        problems.append(f"{summary['errors']} errors {summary['error_statuses']}")
    p95_target = os.environ.get("MAAS_LOAD_P95_MS")
    if p95_target and (summary["admitted_ms"]["95"] or 0) > float(p95_target):
        problems.append(f"admitted p95 {summary['admitted_ms']['95']} ms > {p95_target} ms")
    refusal_target = os.environ.get("MAAS_LOAD_REFUSAL_P95_MS")
    if refusal_target and (summary["refused_ms"]["95"] or 0) > float(refusal_target):
        problems.append(f"refusal p95 {summary['refused_ms']['95']} ms > {refusal_target} ms")
    if not summary["admitted"]:
        problems.append("no request was admitted")
    if problems:
        print("load thresholds not met: " + "; ".join(problems))
        environment.process_exit_code = 1
    else:
        environment.process_exit_code = 0
