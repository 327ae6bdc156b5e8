"""The Lambda HTTP handler on real-shaped API Gateway v1/v2, ALB and function URL events (events/*.json)."""

from __future__ import annotations

import base64
import importlib
import json

import pytest

from functions.context import DeadlineContext
from tests.conftest import EVENTS_DIR


@pytest.fixture(scope="module")
def http_handler(built_artifacts):
    mp = pytest.MonkeyPatch()
    mp.setenv("MAAS_MODELS", ",".join(str(p) for p in built_artifacts.values()))
    from functions.inference import registry
    from functions.settings import get_settings

    get_settings.cache_clear()
    registry.get_registry.cache_clear()
    import functions.handlers.http as module

    module = importlib.reload(module)
    yield module.handler
    mp.undo()
    get_settings.cache_clear()
    registry.get_registry.cache_clear()


def invoke(handler, name: str) -> tuple[int, dict]:
    event = json.loads((EVENTS_DIR / f"{name}.json").read_text())
    response = handler(event, DeadlineContext(20, function_name="maas-test", request_id="lambda-req-123"))
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body)
    return response["statusCode"], json.loads(body)


def test_rest_api_v1_predict(http_handler):
    status, body = invoke(http_handler, "apigw_v1_predict_embed")
    assert status == 200 and len(body["outputs"]) == 2 and len(body["outputs"][0]) == 384


def test_http_api_v2_oip_infer_base64_body(http_handler):
    status, body = invoke(http_handler, "apigw_v2_oip_infer_intent")
    assert status == 200
    labels = next(o for o in body["outputs"] if o["name"] == "label")["data"]
    assert labels == ["report_lost_card", "restaurant_reservation"]
    assert [o["name"] for o in body["outputs"]] == ["label", "score"]


def test_alb_openai_embeddings(http_handler):
    status, body = invoke(http_handler, "alb_openai_embeddings")
    assert status == 200 and body["object"] == "list" and len(body["data"][0]["embedding"]) == 384


def test_function_url_health(http_handler):
    status, body = invoke(http_handler, "function_url_health_ready")
    assert status == 200 and body["ready"] is True


def test_bad_field_is_422_through_lambda(http_handler):
    status, body = invoke(http_handler, "apigw_v2_predict_bad_field")
    assert status == 422 and body["error"]["param"] == "inputs"


def test_request_id_comes_from_lambda_context(http_handler):
    event = json.loads((EVENTS_DIR / "function_url_health_ready.json").read_text())
    response = http_handler(event, DeadlineContext(20, function_name="maas-test", request_id="lambda-req-123"))
    assert response["headers"]["x-request-id"] == "lambda-req-123"


def test_model_loads_once_per_process_not_per_request(http_handler, monkeypatch):
    from functions.inference import registry as registry_module

    calls = []
    monkeypatch.setattr(registry_module, "load_pipeline", lambda *a, **k: calls.append(a))
    for _ in range(3):
        invoke(http_handler, "apigw_v1_predict_embed")
    assert calls == []


# --- malformed events (issue 15): a 400 that says what is wrong, never a raising handler ----------------------
def _event(name: str) -> dict:
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


def _without(event: dict, *path: str) -> dict:
    node = event
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return event


MALFORMED = {
    "empty object": lambda: {},
    "not an object": lambda: ["GET", "/models"],
    "invalid base64 body": lambda: {**_event("apigw_v2_oip_infer_intent"), "body": "%%% not base64 %%%="},
    "REST API without httpMethod": lambda: _without(_event("apigw_v1_predict_embed"), "httpMethod"),
    "REST API without path": lambda: _without(_event("apigw_v1_predict_embed"), "path"),
    "HTTP API without requestContext.http": lambda: _without(_event("apigw_v2_predict_bad_field"), "requestContext",
                                                             "http"),
    "HTTP API without requestContext": lambda: _without(_event("apigw_v2_predict_bad_field"), "requestContext"),
    "body is an object": lambda: {**_event("apigw_v1_predict_embed"), "body": {"inputs": "x"}},
    "body is a number": lambda: {**_event("apigw_v2_predict_bad_field"), "body": 42},
    "method is a number": lambda: {**_event("apigw_v1_predict_embed"), "httpMethod": 7},
    "header value is a list": lambda: {**_event("apigw_v2_predict_bad_field"), "headers": {"content-type": ["a"]}},
    "body with a lone surrogate": lambda: {**_event("apigw_v2_predict_bad_field"), "body": '{"inputs": "\ud800"}'},
}  # fmt: skip


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_event_is_answered_400_not_raised(http_handler, name):
    # GIVEN an event no HTTP event source would send WHEN the HTTP handler is invoked with it
    response = http_handler(MALFORMED[name](), DeadlineContext(20, function_name="maas-test", request_id="bad-1"))
    # THEN it answers 400 in the proxy response shape, with an error body that says what is wrong
    assert response["statusCode"] == 400, response
    headers = response.get("headers") or {k: v[0] for k, v in response["multiValueHeaders"].items()}
    assert headers["content-type"] == "application/json" and headers["x-request-id"] == "bad-1"
    error = json.loads(response["body"])["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert "not a valid HTTP event" in message and "Traceback" not in message


def test_a_lone_surrogate_in_an_http_event_body_is_the_routes_own_4xx(http_handler):
    # the body escapes the surrogate as JSON allows: the event is fine, the text is not Unicode
    event = {**_event("apigw_v2_predict_bad_field"), "body": '{"inputs": "\\ud800"}'}
    response = http_handler(event, DeadlineContext(20, function_name="maas-test", request_id="sur-1"))
    assert response["statusCode"] == 422 and "lone surrogate" in json.loads(response["body"])["error"]["message"]
