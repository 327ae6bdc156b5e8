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
