"""GIVEN an API Gateway event through the Lambda HTTP handler WHEN it is answered THEN its metrics come out as
CloudWatch EMF on stdout (requests, errors, latency, inputs, tokens, cold start, by model) and every log line
of the request — the access line and any line logged in the worker thread that ran the model — carries its
request id."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from functions.context import DeadlineContext
from functions.telemetry import logger
from tests.conftest import EVENTS_DIR
from tests.functional.test_lambda_events import http_handler  # noqa: F401  (the module-scoped fixture)


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


@pytest.fixture
def info_logs():  # type: ignore[no-untyped-def]
    """The runtime's log lines at INFO, as written (Powertools' handler, pointed at a buffer)."""
    level, handler = logger.log_level, logger.registered_handler
    buffer = io.StringIO()
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    logger.setLevel("INFO")
    yield buffer
    logger.setLevel(level)
    handler.setStream(previous)  # type: ignore[attr-defined]


def _invoke(handler: Any, name: str, request_id: str) -> dict[str, Any]:
    event = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    response: dict[str, Any] = handler(event, DeadlineContext(20, function_name="maas-test", request_id=request_id))
    return response


def test_a_request_emits_its_metrics_and_every_log_line_carries_its_request_id(
    http_handler,  # noqa: F811
    capsys,
    info_logs,
    monkeypatch,
):
    import functions.handlers.http as module

    pipeline = module.app.state.registry.get("minilm-embed")
    execute = pipeline.execute

    def logging_execute(features: Any, parameters: Any) -> Any:
        logger.info("running the model", extra={"inputs": len(features)})  # in the worker thread
        return execute(features, parameters)

    monkeypatch.setattr(pipeline, "execute", logging_execute)
    capsys.readouterr()
    response = _invoke(http_handler, "apigw_v1_predict_embed", "req-metrics-1")
    assert response["statusCode"] == 200
    lines = _lines(capsys.readouterr().out)

    logs = _lines(info_logs.getvalue())
    assert {line["message"] for line in logs} >= {"running the model", "request"}
    assert all(line.get("request_id") == "req-metrics-1" for line in logs), logs

    (emf,) = [line for line in lines if "_aws" in line and "Requests" in line]
    (definition,) = emf["_aws"]["CloudWatchMetrics"]
    assert definition["Dimensions"] == [["service", "model"]] and emf["model"] == "minilm-embed"
    names = {m["Name"] for m in definition["Metrics"]}
    assert {"Requests", "ClientErrors", "ServerErrors", "Latency", "Inputs", "InputTokens", "OutputTokens"} <= names
    assert emf["Requests"] == [1.0] and emf["ServerErrors"] == [0.0] and emf["ClientErrors"] == [0.0]
    assert emf["Inputs"] == [2.0] and emf["InputTokens"][0] > 2 and emf["Latency"][0] > 0


def test_a_refused_request_is_counted_as_a_client_error_by_code(http_handler, capsys, info_logs):  # noqa: F811
    capsys.readouterr()
    response = _invoke(http_handler, "apigw_v2_predict_bad_field", "req-metrics-2")
    assert response["statusCode"] == 422
    lines = _lines(capsys.readouterr().out)
    (emf,) = [line for line in lines if "_aws" in line and "Requests" in line]
    assert emf["ClientErrors"] == [1.0] and emf["ServerErrors"] == [0.0]
    (by_code,) = [line for line in lines if "_aws" in line and "Errors" in line and "code" in line]
    assert by_code["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service", "model", "code"]]
    assert by_code["code"] == "invalid_request" and by_code["Errors"] == [1.0]
    logs = _lines(info_logs.getvalue())
    assert logs and all(line.get("request_id") == "req-metrics-2" for line in logs)


def test_cold_start_is_counted_once_per_model_and_process(http_handler, capsys):  # noqa: F811
    from functions import telemetry

    telemetry._cold_models.discard("minilm-embed")
    capsys.readouterr()
    first = _invoke(http_handler, "apigw_v1_predict_embed", "req-cold-1")
    second = _invoke(http_handler, "apigw_v1_predict_embed", "req-cold-2")
    assert first["statusCode"] == second["statusCode"] == 200
    docs = [line for line in _lines(capsys.readouterr().out) if "_aws" in line and "Requests" in line]
    assert [d.get("ColdStart") for d in docs] == [[1.0], None]


def test_a_server_reports_its_requests_in_flight_every_interval(registry, capsys, monkeypatch):
    """GIVEN a server with load reports on (the GPU container: uvicorn runs the app's lifespan) WHEN a request
    is running THEN the next report counts it (EMF metric InFlight, dimension service), and idle reports say 0."""
    import threading
    import time

    from fastapi.testclient import TestClient

    from functions.settings import Settings
    from functions.web.app import create_app

    pipeline = registry.get("minilm-embed")
    running, release = threading.Event(), threading.Event()
    execute = pipeline.execute

    def held(features: Any, parameters: Any) -> Any:
        running.set()
        release.wait(10)
        return execute(features, parameters)

    monkeypatch.setattr(pipeline, "execute", held)
    app = create_app(registry, Settings(load_metrics_interval_s=0.05))
    with TestClient(app) as client:
        time.sleep(0.2)
        worker = threading.Thread(
            target=client.post, args=("/models/minilm-embed/predict",), kwargs={"json": {"inputs": "x"}}
        )
        worker.start()
        assert running.wait(10)
        time.sleep(0.2)
        release.set()
        worker.join(10)
    reports = [line for line in _lines(capsys.readouterr().out) if "_aws" in line and "InFlight" in line]
    assert reports and reports[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    counts = [r["InFlight"][0] for r in reports]
    assert counts[0] == 0.0 and 1.0 in counts


def test_no_load_reports_without_a_server_lifespan(registry, capsys):
    from fastapi.testclient import TestClient

    from functions.settings import Settings
    from functions.web.app import create_app

    with TestClient(create_app(registry, Settings())) as client:
        assert client.get("/v2/health/live").status_code == 200
    assert not [line for line in _lines(capsys.readouterr().out) if "InFlight" in line]
