"""The local gateway's decisions, without any function: GIVEN a stage read from templates THEN routes resolve as API
Gateway resolves them (exact resource first, then the longest {proxy+}, unknown paths and methods refused alike),
policies are evaluated with an explicit Deny winning, gateway responses substitute $context (no VTL), a cached
authorizer requires its identity source, usage plans throttle per key and per method, and the streaming server the
gateway runs is the image's own (uvicorn at the Dockerfile's version)."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from maas_dev.gateway.environments import Environments
from maas_dev.gateway.events import Request, evaluate, gateway_response, proxy_event
from maas_dev.gateway.server import Bucket, LocalGateway, Refusal
from maas_dev.gateway.stage import Authorizer, FunctionDef, GatewayResponse, Method, Stage, UsagePlan
from maas_dev.task_roots import dockerfile_arg

FUNCTION = FunctionDef("Fn", "maas-dev-model-m", Path("/x"), None, "functions.handlers.http.handler", None, {}, 20, 128)
AUTHORIZER = Authorizer("Auth", "maas-dev-task-keys", 300, ("method.request.header.Authorization",), FUNCTION)


def _method(path: str, http_method: str = "POST", **extra: Any) -> Method:
    fields: dict[str, Any] = {
        "authorization": "CUSTOM", "authorizer": AUTHORIZER, "api_key_required": True, "integration": "AWS_PROXY",
        "function": FUNCTION, "stream": False, "timeout_s": 29.0,
    }  # fmt: skip
    return Method(path, http_method, **{**fields, **extra})


STAGE = Stage(
    name="dev",
    region="eu-west-1",
    account="123456789012",
    key_source="AUTHORIZER",
    binary_media_types=("image/*",),
    methods=(
        _method("/models/m"),
        _method("/models/m/{proxy+}"),
        _method("/models/m/{proxy+}", "GET"),
        _method("/v1/chat/completions"),
    ),
    gateway_responses={
        "ACCESS_DENIED": GatewayResponse(403, {"WWW-Authenticate": "Bearer"}, "$context.authorizer.errorBody"),
        "UNAUTHORIZED": GatewayResponse(401, {}, '{"error": "no key"}'),
    },
    usage_plans=(UsagePlan("standard", 50, 2, {"/v1/chat/completions/POST": (1, 1)}, ("maas-dev-demo",)),),
)


@pytest.fixture
def gateway() -> Any:
    environments = Environments(lambda f: Path("/x"), lambda f: {}, python=Path("/usr/bin/python3"), runtime_dir=None)
    served = LocalGateway(STAGE, environments, {"maas-dev-demo": "usage-key-value-of-demo"})
    yield served
    served.httpd.server_close()


def _request(path: str, method: str = "POST", headers: list[tuple[str, str]] | None = None) -> Request:
    return Request(method, path, {}, headers or [], b"")


def test_routes_resolve_as_api_gateway_resolves_them(gateway: Any) -> None:
    assert gateway.route(_request("/models/m")).path == "/models/m"
    assert gateway.route(_request("/models/m/predict")).path == "/models/m/{proxy+}"
    assert gateway.route(_request("/models/m/a/b", "GET")).http_method == "GET"
    for unknown in (_request("/models/other"), _request("/v1/chat/completions", "GET"), _request("/models/m/")):
        with pytest.raises(Refusal) as refused:
            gateway.route(unknown)
        assert refused.value.kind == "MISSING_AUTHENTICATION_TOKEN"


def test_policies_allow_by_wildcard_and_an_explicit_deny_wins() -> None:
    arn = "arn:aws:execute-api:eu-west-1:123456789012:local/dev/POST/models/m/predict"
    allow = {"Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": "arn:*:local/dev/*/*"}]}
    assert evaluate(allow, arn)
    deny = {"Statement": [*allow["Statement"], {**allow["Statement"][0], "Effect": "Deny"}]}
    assert not evaluate(deny, arn)
    assert not evaluate({"Statement": [{**allow["Statement"][0], "Resource": "arn:*:local/prod/*/*"}]}, arn)


def test_gateway_responses_substitute_the_authorizers_context_only() -> None:
    body = json.dumps({"error": {"code": "invalid_api_key", "message": "no"}})
    status, headers, sent = gateway_response(STAGE, "ACCESS_DENIED", context={"errorBody": body})
    assert status == 403 and headers["WWW-Authenticate"] == "Bearer" and json.loads(sent) == json.loads(body)
    assert gateway_response(STAGE, "THROTTLED")[:1] == (429,)  # API Gateway's default where the stage has none


def test_a_cached_authorizer_requires_its_identity_source(gateway: Any) -> None:
    with pytest.raises(Refusal) as refused:
        gateway.authorize(STAGE.methods[0], _request("/models/m", headers=[("x-api-key", "maas_...")]))
    assert refused.value.kind == "UNAUTHORIZED" and gateway.authorizer_calls == 0


def test_usage_plans_throttle_per_key_and_per_method(gateway: Any) -> None:
    chat, model = STAGE.methods[3], STAGE.methods[1]
    with pytest.raises(Refusal, match="INVALID_API_KEY"):
        gateway.meter(model, "a-key-of-no-plan")
    gateway.meter(chat, "usage-key-value-of-demo")
    with pytest.raises(Refusal, match="THROTTLED"):  # the generation route's own burst of 1
        gateway.meter(chat, "usage-key-value-of-demo")
    gateway.meter(model, "usage-key-value-of-demo")  # the plan's burst of 2 had one left
    bucket = Bucket(rate=1000, burst=1)
    assert bucket.take() and not bucket.take()


def test_proxy_events_carry_the_authorizers_context_and_binary_bodies_in_base64() -> None:
    request = Request("POST", "/models/m/predict", {"a": ["1"]}, [("content-type", "image/png")], b"\x89PNG")
    event = proxy_event(STAGE, request, "/models/m/{proxy+}", authorizer={"tenant": "demo"}, api_key="k")
    assert event["pathParameters"] == {"proxy": "predict"} and event["isBase64Encoded"] is True
    assert event["requestContext"]["authorizer"] == {"tenant": "demo"}
    assert event["requestContext"]["identity"]["apiKey"] == "k" and event["queryStringParameters"] == {"a": "1"}


def test_the_local_server_is_the_images_uvicorn() -> None:
    dockerfile = Path(__file__).resolve().parents[2] / "docker" / "lambda.Dockerfile"
    assert dockerfile_arg(dockerfile, "UVICORN_VERSION") == metadata.version("uvicorn")
