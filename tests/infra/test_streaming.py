"""GIVEN a text-generation model THEN its responses stream end to end as deployed: every one of its API Gateway
integrations uses STREAM transfer mode (Lambda: response-streaming invocations; GPU: the HTTP proxy through the VPC
link), its Lambda HTTP function is the image's ``stream`` target (the Lambda Web Adapter in front of the app under
uvicorn) with the adapter's settings and the request deadline, while its S3/SQS functions keep the plain handlers;
other models stay buffered. A generation model cannot be forced into a zip, nor combined with SnapStart."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
import pytest

from functions.contract.deployment import LAMBDA_WEB_ADAPTER_ENVIRONMENT, STREAM_SERVER_COMMAND
from functions.contract.errors import CatalogError
from tests.infra.conftest import STAGE, Synth, function_handler, lambda_entry

Build = Callable[..., cdk.App]


def _methods(app: Synth, model: str) -> list[dict[str, Any]]:
    resources = app.json(f"maas-{STAGE}-model-{model}")["Resources"]
    return [r["Properties"] for r in resources.values() if r["Type"] == "AWS::ApiGateway::Method"]


def test_generation_routes_stream_and_the_others_stay_buffered(default_app: Synth, catalog: dict[str, Any]) -> None:
    for model, entry in catalog.items():
        for method in _methods(default_app, model):
            integration = method["Integration"]
            if entry["task"] == "text-generation":
                assert integration["ResponseTransferMode"] == "STREAM", model
                if integration["Type"] == "AWS_PROXY":
                    uri = json.dumps(integration["Uri"])
                    assert "2021-11-15/functions/" in uri and "response-streaming-invocations" in uri
            else:
                assert integration.get("ResponseTransferMode", "BUFFERED") == "BUFFERED", model


def test_the_generation_function_is_the_web_adapter_in_front_of_uvicorn(default_app: Synth) -> None:
    stack = f"maas-{STAGE}-model-smollm2-chat"
    resources = default_app.json(stack)["Resources"]
    functions = {
        function_handler(r["Properties"]).split(".")[2]: r["Properties"]  # type: ignore[union-attr]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and function_handler(r["Properties"])
    }
    http = functions["http"]
    assert http["PackageType"] == "Image" and http["ImageConfig"] == {"EntryPoint": list(STREAM_SERVER_COMMAND)}
    env = http["Environment"]["Variables"]
    assert {k: env[k] for k in LAMBDA_WEB_ADAPTER_ENVIRONMENT} == LAMBDA_WEB_ADAPTER_ENVIRONMENT
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert float(env["MAAS_REQUEST_TIMEOUT_S"]) == http["Timeout"]  # generation answers within the function's time
    for kind in ("s3", "sqs"):
        assert functions[kind]["ImageConfig"] == {"Command": [f"functions.handlers.{kind}.handler"]}
        assert "AWS_LWA_INVOKE_MODE" not in functions[kind]["Environment"]["Variables"]
    # the image's targets: stream for the HTTP function, the plain runtime for the event functions
    assets = json.loads((default_app.outdir / f"{stack}.assets.json").read_text())["dockerImages"]
    targets = sorted(image["source"]["dockerBuildTarget"] for image in assets.values())
    assert targets == ["runtime", "stream"]


def test_buffered_models_set_the_request_deadline_too(default_app: Synth) -> None:
    resources = default_app.json(f"maas-{STAGE}-model-minilm-embed")["Resources"]
    (http,) = [
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function"
        and function_handler(r["Properties"]) == "functions.handlers.http.handler"
    ]
    assert float(http["Environment"]["Variables"]["MAAS_REQUEST_TIMEOUT_S"]) == http["Timeout"]
    assert "AWS_LWA_INVOKE_MODE" not in http["Environment"]["Variables"]


def test_gpu_generation_streams_through_the_vpc_link_within_the_integration_timeout(variant_app: Synth) -> None:
    methods = _methods(variant_app, "generator-gpu")
    assert methods and all(m["Integration"]["ResponseTransferMode"] == "STREAM" for m in methods)
    assert all(m["Integration"]["Type"] == "HTTP_PROXY" for m in methods)
    resources = variant_app.json(f"maas-{STAGE}-model-generator-gpu")["Resources"]
    containers = [
        c
        for r in resources.values()
        if r["Type"] == "AWS::ECS::TaskDefinition"
        for c in r["Properties"]["ContainerDefinitions"]
        if c["Name"] == "server"
    ]
    env = {e["Name"]: e["Value"] for e in containers[0]["Environment"]}
    assert float(env["MAAS_REQUEST_TIMEOUT_S"]) == methods[0]["Integration"]["TimeoutInMillis"] / 1000


@pytest.mark.parametrize(
    ("deploy", "message"),
    [({"package": "zip"}, 'package = "zip", but its task streams'), ({"snap_start": True}, "snap_start is for zip")],
)
def test_a_streaming_model_cannot_be_a_zip(build: Build, deploy: dict[str, Any], message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        build({"g": lambda_entry("text-generation", **deploy)})
