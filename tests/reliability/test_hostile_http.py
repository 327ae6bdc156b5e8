"""Hostile callers over HTTP (issue 15): nothing one caller sends can starve, reset or 500 anyone.

GIVEN a real uvicorn server on loopback (or the app in-process where the connection does not matter), WHEN a
caller holds bodies open, sends text that is not Unicode, tensors that overflow, or nesting a parser cannot
follow, THEN each gets its own 4xx in its protocol's shape, its keep-alive connection survives (or is closed
with ``Connection: close`` when the body was left unread), and other callers are served as if it were not there.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.settings import Settings
from maas_dev.server import BackgroundServer
from tests.reliability.conftest import FULL
from tests.reliability.hostile_json import hostile_values, strings
from tests.reliability.support import LEAKS, assert_clean_error, generation_artifact

EMBED, CLASSIFIER, CHAT = "minilm-embed", "intent-classifier", "smollm2-chat"
GOOD = {"inputs": "a good request from a patient client"}


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _stalled_upload(url: str, declared: int = 100) -> socket.socket:
    """A client that sends its headers and one byte of a ``declared``-byte body, then goes quiet."""
    sock = socket.create_connection(_host_port(url), timeout=30)
    head = (
        f"POST /models/{EMBED}/predict HTTP/1.1\r\nHost: maas\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n{{"
    )
    sock.sendall(head.encode())
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body, and whether the server closed the connection afterwards."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    sock.settimeout(5)
    try:
        closed = sock.recv(1) == b""
    except (TimeoutError, ConnectionResetError):
        closed = False
    return status, headers, body, closed


@pytest.fixture(scope="module")
def impatient_server(registry) -> Iterator[BackgroundServer]:  # type: ignore[no-untyped-def]
    """The default admission control (32 slots, 64 queued), with a short body deadline so the test is quick."""
    with BackgroundServer(registry, settings=Settings(body_timeout_s=3.0)) as server:
        yield server


def test_idle_and_slow_uploads_hold_no_admission_slot(impatient_server, record):
    # GIVEN 32 connections (the whole admission cap) that sent headers and one body byte, then went quiet
    settings = Settings()
    idle = [_stalled_upload(impatient_server.url) for _ in range(settings.max_concurrency)]
    slow = _stalled_upload(impatient_server.url, declared=10_000)  # and one that drips a byte at a time
    time.sleep(0.5)
    # WHEN a good request arrives while they are all still open
    started = time.perf_counter()
    response = httpx.post(f"{impatient_server.url}/models/{EMBED}/predict", json=GOOD, timeout=30)
    answered_s = time.perf_counter() - started
    # THEN it is served at once: an unfinished body never holds a slot
    assert response.status_code == 200, response.text
    assert answered_s < 1.0, answered_s
    drip_started = time.perf_counter()
    for _ in range(60):  # ~6 s of dripping, past the 3 s deadline
        try:
            slow.sendall(b" ")
        except OSError:
            break
        time.sleep(0.1)
    # AND each stalled upload is answered 408 with Connection: close once the body deadline passes
    outcomes = [_read_response(sock) for sock in idle]
    slow_status, slow_headers, _, slow_closed = _read_response(slow)
    dripped_s = time.perf_counter() - drip_started
    for status, headers, body, closed in outcomes:
        assert status == 408 and headers["connection"] == "close" and closed, (status, headers)
        assert json.loads(body)["error"]["code"] == "request_timeout"
    assert slow_status == 408 and slow_headers["connection"] == "close" and slow_closed
    for sock in [*idle, slow]:
        sock.close()
    record(
        "hostile",
        "idle and slow uploads vs a good request",
        {
            "idle_connections": len(idle),
            "admission_slots": settings.max_concurrency,
            "good_request_status": response.status_code,
            "good_request_ms": round(answered_s * 1000, 1),
            "idle_answered": f"408 + Connection: close, {len(outcomes)} of {len(idle)}",
            "slow_drip_answered_after_s": round(dripped_s, 1),
            "body_timeout_s": 3.0,
        },
        "bodies are read before admission, under MAAS_BODY_TIMEOUT_S (default 10 s; 3 s in this test)",
    )


# --- lone surrogates and keep-alive --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_models_server(built_artifacts) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from functions.inference.registry import registry_from_settings

    models = [built_artifacts[EMBED], built_artifacts[CLASSIFIER], generation_artifact()]
    registry = registry_from_settings(Settings(models=",".join(str(m) for m in models), warmup=False))
    assert registry.ready, registry.failures
    with BackgroundServer(registry) as server:
        yield server.url


S = "\\ud800"  # as a JSON escape: the body is valid JSON, the string is not valid Unicode
SURROGATE_BODIES: dict[str, tuple[str, str]] = {
    "task embed": (f"/models/{EMBED}/predict", f'{{"inputs": ["ok", "{S}"]}}'),
    "task classify": (f"/models/{CLASSIFIER}/predict", f'{{"inputs": "x{S}y"}}'),
    "task generate": (f"/models/{CHAT}/predict", f'{{"inputs": "{S}", "parameters": {{"max_new_tokens": 1}}}}'),
    "task generate stop": (f"/models/{CHAT}/predict", f'{{"inputs": "hi", "parameters": {{"stop": ["{S}"]}}}}'),
    "task parameter key": (f"/models/{EMBED}/predict", f'{{"inputs": "ok", "parameters": {{"{S}": 1}}}}'),
    "oip BYTES": (
        f"/v2/models/{EMBED}/infer",
        f'{{"inputs": [{{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["{S}"]}}]}}',
    ),
    "oip tensor name": (
        f"/v2/models/{EMBED}/infer",
        f'{{"inputs": [{{"name": "{S}", "shape": [1], "datatype": "BYTES", "data": ["a"]}}]}}',
    ),
    "openai embeddings": ("/v1/embeddings", f'{{"model": "{EMBED}", "input": ["{S}"]}}'),
    "openai model name": ("/v1/embeddings", f'{{"model": "{S}", "input": "ok"}}'),
    "openai completions": ("/v1/completions", f'{{"model": "{CHAT}", "prompt": "{S}", "max_tokens": 1}}'),
    "openai chat": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi {S}"}}], "max_tokens": 1}}',
    ),
    "openai chat part": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": [{{"type": "text", "text": "{S}"}}]}}]}}',
    ),
    "openai chat stop": (
        "/v1/chat/completions",
        f'{{"model": "{CHAT}", "messages": [{{"role": "user", "content": "hi"}}], "stop": "{S}", "max_tokens": 1}}',
    ),
}


def test_lone_surrogates_are_each_routes_own_4xx_and_keep_the_connection(text_models_server, record):
    host, port = _host_port(text_models_server)
    connection = http.client.HTTPConnection(host, port, timeout=120)
    connection.connect()
    local = connection.sock.getsockname()
    statuses: dict[str, int] = {}
    for name, (path, body) in SURROGATE_BODIES.items():
        # WHEN a request carries a lone surrogate (in its input, a parameter, a name) on a kept-alive connection
        connection.request("POST", path, body=body.encode(), headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        statuses[name] = response.status
        # THEN it is refused alone, with a 4xx in its protocol's shape, and the connection stays open
        assert 400 <= response.status < 500, (name, response.status, payload[:300])
        assert (response.getheader("connection") or "").lower() != "close", name
        assert set(json.loads(payload)) == {"error"} and not LEAKS.search(payload.decode()), (name, payload[:300])
        connection.request("POST", f"/models/{EMBED}/predict", body=json.dumps(GOOD).encode(),
                           headers={"Content-Type": "application/json"})  # fmt: skip
        follow = connection.getresponse()
        follow.read()
        assert follow.status == 200 and connection.sock.getsockname() == local, name  # the same connection
    connection.close()
    record(
        "hostile",
        "lone surrogate (\\ud800) on every text route",
        {"requests": len(statuses), "statuses": dict(sorted(_count(statuses.values()).items())), "5xx": 0,
         "connection_reused_after_each": True},
        "task (embed, classify, generate, stop, parameter key), OIP BYTES and tensor name, /v1/embeddings (input, "
        "model), /v1/completions, /v1/chat/completions (content, text part, stop)",
    )  # fmt: skip


def _count(values: Any) -> dict[int, int]:
    counts: dict[int, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


# --- one x-request-id per response -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", f"/models/{EMBED}/predict", GOOD, {}, 200),
        ("POST", "/models/no-such-model/predict", GOOD, {}, 404),
        ("POST", f"/models/{EMBED}/predict", {"inputs": 3}, {}, 422),
        ("POST", f"/v2/models/{EMBED}/infer", {"inputs": []}, {}, 422),
        ("POST", "/v1/embeddings", {"model": EMBED}, {}, 422),
        ("GET", f"/models/{EMBED}/predict", None, {}, 405),
        ("POST", f"/models/{EMBED}/predict", GOOD, {"Content-Encoding": "br"}, 415),
        ("POST", f"/models/{EMBED}/predict", GOOD, {"Content-Length": str(10**9)}, 413),
        ("POST", "/models/no-such-model/predict", GOOD, {"x-request-id": "caller-chosen-id"}, 404),
    ],
)
def test_every_response_carries_exactly_one_request_id(live_server, method, path, body, headers, status):
    host, port = _host_port(live_server)
    connection = http.client.HTTPConnection(host, port, timeout=30)
    payload = json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json", **headers}
    if "Content-Length" in headers:  # a declared length over the cap is refused unread
        connection.putrequest(method, path)
        for key, value in sent.items():
            connection.putheader(key, value)
        connection.endheaders()
    else:
        connection.request(method, path, body=payload, headers=sent)
    response = connection.getresponse()
    response.read()
    ids = [value for key, value in response.getheaders() if key.lower() == "x-request-id"]
    assert response.status == status
    assert len(ids) == 1 and "," not in ids[0], ids
    if "x-request-id" in headers:
        assert ids == [headers["x-request-id"]]
    connection.close()


# --- the OIP parser ------------------------------------------------------------------------------------------
def _oip(data: str, shape: str = "[1]", datatype: str = "INT64") -> bytes:
    return f'{{"inputs": [{{"name": "text", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'.encode()


OIP_BODIES = {
    "shape [2^32, 2^32], empty data": _oip("[]", "[4294967296, 4294967296]", "BYTES"),
    "shape [2^64, 0], empty data": _oip("[]", "[18446744073709551616, 0]", "BYTES"),
    "integer of 5,000 digits": _oip("[" + "9" * 5000 + "]"),
    "INT64 above its range": _oip(f"[{2**63}]"),
    "INT64 below its range": _oip(f"[{-(2**63) - 1}]"),
    "UINT8 negative": _oip("[-1]", datatype="UINT8"),
    "nesting 3,000 deep (6 KB)": _oip("[" * 3000 + "1" + "]" * 3000),
    "nesting 100k deep": _oip("[" * 100_000 + "]" * 100_000),
    "lone surrogate in BYTES": _oip(f'["{S}"]', datatype="BYTES"),
}


@pytest.mark.parametrize("name", list(OIP_BODIES))
def test_the_oip_parser_refuses_what_it_cannot_represent_with_a_422(client, name, record):
    response = client.post(f"/v2/models/{EMBED}/infer", content=OIP_BODIES[name],
                           headers={"Content-Type": "application/json"})  # fmt: skip
    body = assert_clean_error(response, 422)
    assert len(body["error"]) < 400  # says what is wrong without echoing the input back
    record("hostile", f"OIP parser: {name}", {"status": response.status_code})


# --- micro-batching: a bad request among good ones ----------------------------------------------------------
def test_one_bad_request_among_30_micro_batched_ones_fails_alone(registry, record):
    import asyncio

    from functions.web.app import create_app

    app = create_app(registry, Settings(microbatch=True, microbatch_wait_ms=20))
    bodies = [json.dumps({"inputs": f"good request {n}"}).encode() for n in range(30)]
    bodies.insert(13, f'{{"inputs": "bad {S} request"}}'.encode())

    async def call() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://maas") as client:
            return await asyncio.gather(*(client.post(f"/models/{EMBED}/predict", content=body,
                                                      headers={"Content-Type": "application/json"})
                                          for body in bodies))  # fmt: skip

    for _ in range(3):  # the issue saw 30 x 500 in three rounds out of three
        statuses = [r.status_code for r in asyncio.run(call())]
        assert statuses[13] == 422 and statuses[:13] + statuses[14:] == [200] * 30, statuses
    stats = app.state.batchers[EMBED].stats
    assert stats.runs < stats.items  # they did share runs
    record("hostile", "micro-batching: 1 lone-surrogate request among 30", {"rounds": 3, "good_200": 30, "bad": 422,
                                                                           "shared_runs": stats.runs})  # fmt: skip


# --- the OIP codec, property-based -------------------------------------------------------------------------------
@given(
    data=hostile_values,
    shape=st.one_of(hostile_values, st.lists(st.integers(-2, 2**65), max_size=4).map(json.dumps)),
    datatype=st.sampled_from(["BYTES", "INT64", "INT8", "UINT8", "FP16", "FP32", "BOOL", "NOPE"]),
    name=st.one_of(st.just('"text"'), strings),
)
@settings(max_examples=400 if FULL else 60, deadline=None, derandomize=not FULL,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_the_oip_codec_reads_any_json_like_tensor_or_refuses_it_with_a_422(data, shape, datatype, name):
    from functions.errors import InvalidInputError
    from functions.protocols.oip.codec import parse_infer_request

    body = f'{{"inputs": [{{"name": {name}, "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'
    try:
        _, arrays = parse_infer_request(body.encode("utf-8"), None)
    except InvalidInputError as exc:
        assert exc.status_code == 422 and len(exc.message) < 1000
        return
    (array,) = arrays.values()
    assert list(array.shape) == json.loads(shape)


def test_bodies_in_transit_are_capped_and_health_checks_pass_the_cap():
    import asyncio

    from functions.web.body import RequestBodyMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run() -> list[int]:
        middleware = RequestBodyMiddleware(app, max_bytes=1024, timeout_s=30, max_readers=2)
        never = asyncio.Event()

        async def stalled() -> dict[str, Any]:
            await never.wait()
            return {"type": "http.disconnect"}

        async def request(path: str, receive: Any) -> int:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}
            await middleware(scope, receive, send)
            return int(sent[0]["status"]) if sent else 0  # a client that went away gets nothing

        async def whole() -> dict[str, Any]:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        # GIVEN two uploads that never finish (the cap is 2)
        stuck = [asyncio.create_task(request(f"/models/{EMBED}/predict", stalled)) for _ in range(2)]
        await asyncio.sleep(0.05)
        # WHEN a third upload and a health check arrive THEN the upload is refused at once, the health check served
        statuses = [await request(f"/models/{EMBED}/predict", whole), await request("/v2/health/ready", whole)]
        never.set()
        await asyncio.gather(*stuck)
        return statuses

    assert asyncio.run(run()) == [429, 200]
