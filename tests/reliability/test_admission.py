"""Admission control, deterministically: requests held open by a gate, the cap counted exactly."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from functions.web.security import AdmissionController, AdmissionControlMiddleware


class GatedApp:
    """An ASGI app whose requests stay in flight until the gate opens."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.peak = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gated = scope["path"] != "/v2/health/live"
        self.running += gated
        self.peak = max(self.peak, self.running)
        try:
            if gated:
                await self.gate.wait()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.running -= gated


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def scenario(cap: int, queue: int, timeout: float, clients: int) -> dict[str, Any]:
    inner = GatedApp()
    app = AdmissionControlMiddleware(inner, AdmissionController(cap, queue, timeout))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        timings: dict[int, float] = {}

        async def call(i: int) -> httpx.Response:
            started = time.perf_counter()
            response = await client.post(f"/models/m/predict?i={i}", json={"inputs": "x"})
            timings[i] = time.perf_counter() - started
            return response

        tasks = [asyncio.create_task(call(i)) for i in range(clients)]
        await _settle()
        early = {i: t.result().status_code for i, t in enumerate(tasks) if t.done()}
        health = await client.get("/v2/health/live")  # exempt, even when saturated
        in_flight, waiting = app.controller.in_flight, app.controller.waiting
        await asyncio.sleep(timeout * 1.5)
        inner.gate.set()
        responses = await asyncio.gather(*tasks)
    return {
        "early": early,
        "statuses": [r.status_code for r in responses],
        "responses": responses,
        "timings": timings,
        "in_flight": in_flight,
        "waiting": waiting,
        "peak": inner.peak,
        "health": health.status_code,
        "controller": app.controller,
    }


def test_at_twice_the_cap_the_excess_is_refused_at_once_with_429(record):
    # GIVEN a cap of 4 and no queue, WHEN 8 requests arrive together and the first 4 are held
    result = asyncio.run(scenario(cap=4, queue=0, timeout=0.2, clients=8))
    # THEN 4 are admitted (never more in flight) and 4 refused with 429 before any admitted one finished
    assert sorted(result["statuses"]) == [200] * 4 + [429] * 4
    assert sorted(result["early"].values()) == [429] * 4 and result["peak"] == 4 and result["in_flight"] == 4
    assert result["health"] == 200
    refused = [r for r in result["responses"] if r.status_code == 429]
    assert all(r.headers["retry-after"].isdigit() and r.json()["error"]["code"] == "too_many_requests" for r in refused)
    slowest_refusal = max(result["timings"][i] for i in result["early"])
    record(
        "load",
        "admission at 2x the cap (gated, in-process)",
        {
            "cap": 4,
            "queue": 0,
            "requests": 8,
            "admitted": 4,
            "refused_429": 4,
            "slowest_refusal_ms": round(slowest_refusal * 1000, 2),
            "max_in_flight": result["peak"],
        },
    )


def test_a_bounded_queue_waits_then_503s_with_retry_after():
    # GIVEN a cap of 2 and a queue of 2 that waits at most 0.1 s, WHEN 6 requests arrive and are held
    result = asyncio.run(scenario(cap=2, queue=2, timeout=0.1, clients=6))
    # THEN 2 run, 2 wait and time out with 503 + Retry-After, 2 are refused at once with 429
    assert result["in_flight"] == 2 and result["waiting"] == 2 and result["peak"] == 2
    assert sorted(result["statuses"]) == [200, 200, 429, 429, 503, 503]
    busy = [r for r in result["responses"] if r.status_code == 503]
    assert all("retry-after" in r.headers and r.json()["error"]["code"] == "overloaded" for r in busy)
    controller = result["controller"]
    assert controller.in_flight == 0 and controller.waiting == 0  # every slot came back


def test_a_waiting_request_gets_the_next_free_slot():
    async def run() -> list[int]:
        inner = GatedApp()
        app = AdmissionControlMiddleware(inner, AdmissionController(1, 5, 5))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            tasks = [asyncio.create_task(client.get(f"/v1/models?i={i}")) for i in range(4)]
            await _settle()
            assert app.controller.in_flight == 1 and app.controller.waiting == 3
            inner.gate.set()
            statuses = [r.status_code for r in await asyncio.gather(*tasks)]
            assert app.controller.in_flight == 0 and inner.peak == 1
            return statuses

    assert asyncio.run(run()) == [200] * 4


def test_refusals_use_each_protocols_error_shape():
    async def run() -> dict[str, Any]:
        inner = GatedApp()
        app = AdmissionControlMiddleware(inner, AdmissionController(1, 0, 1))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            hold = asyncio.create_task(client.get("/models"))
            await _settle()
            shapes = {
                path: (await client.post(path, json={})).json()
                for path in ("/v1/embeddings", "/v2/models/m/infer", "/models/m/predict")
            }
            inner.gate.set()
            await hold
            return shapes

    shapes = asyncio.run(run())
    assert shapes["/v1/embeddings"]["error"]["type"] == "invalid_request_error"
    assert isinstance(shapes["/v2/models/m/infer"]["error"], str)
    assert shapes["/models/m/predict"]["error"]["code"] == "too_many_requests"


@pytest.mark.parametrize("cap", [0])
def test_a_zero_cap_means_no_admission_control(cap):
    result = asyncio.run(scenario(cap=cap, queue=0, timeout=0.05, clients=12))
    assert result["statuses"] == [200] * 12 and result["peak"] == 12
