"""GIVEN the default stage (bearer keys) THEN the shared stack has an encrypted key table, an authorizer function
that may only read it, one REQUEST authorizer per protocol with a configurable cache, API key source AUTHORIZER, and
gateway responses for refusals (401 without a key, 403 with the authorizer's own body), and every method of every
model uses the authorizer of its path's protocol. GIVEN ``apiAuth=iam`` THEN SigV4 is back, with x-api-key for the
usage plans. Bad cache settings are refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from functions.contract.deployment import API_KEYS_TABLE_ENV, AUTHORIZER_HANDLER
from infra.errors import EnvironmentConfigError
from tests.infra.conftest import STAGE, Synth, lambda_entry

Build = Callable[..., cdk.App]
SHARED = f"maas-{STAGE}-shared"
PROTOCOL_OF = {"v1": "openai", "v2": "oip", "models": "task"}


@pytest.fixture(scope="module")
def shared(default_app: Synth) -> Template:
    return default_app.template(SHARED)


def _stack(app: cdk.App, suffix: str) -> Template:
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith(suffix))
    return Template.from_stack(stack)


def test_keys_live_in_an_encrypted_table_only_the_authorizer_reads(shared: Template) -> None:
    shared.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "TableName": f"maas-{STAGE}-api-keys",
            "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        },
    )
    (function,) = [
        f["Properties"]
        for f in shared.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == AUTHORIZER_HANDLER
    ]
    assert set(function["Environment"]["Variables"]) == {API_KEYS_TABLE_ENV, "POWERTOOLS_LOG_LEVEL"}
    assert function["Architectures"] == ["arm64"] and function["Timeout"] <= 10
    role = function["Role"]["Fn::GetAtt"][0]
    policies = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in shared.find_resources("AWS::IAM::Policy").values()
        if {"Ref": role} in p["Properties"]["Roles"]
    ]
    actions = {a for statements in policies for s in statements for a in _list(s["Action"])}
    assert actions == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "dynamodb:GetItem",
        "kms:Decrypt",
    }
    decrypt = next(s for statements in policies for s in statements if "kms:Decrypt" in _list(s["Action"]))
    assert decrypt["Condition"]["StringEquals"]["kms:ViaService"].startswith("dynamodb.")


def _list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_one_cached_request_authorizer_per_protocol(shared: Template) -> None:
    authorizers = {
        a["Properties"]["Name"]: a["Properties"] for a in shared.find_resources("AWS::ApiGateway::Authorizer").values()
    }
    assert set(authorizers) == {f"maas-{STAGE}-{p}-keys" for p in ("openai", "oip", "task")}
    for props in authorizers.values():
        assert props["Type"] == "REQUEST"
        assert props["AuthorizerResultTtlInSeconds"] == 300
        # cached: the Authorization header is the cache key, required by API Gateway
        assert props["IdentitySource"] == "method.request.header.Authorization"
    permissions = shared.find_resources(
        "AWS::Lambda::Permission", {"Properties": {"Principal": "apigateway.amazonaws.com"}}
    )
    assert len(permissions) == 3


def test_refusals_are_gateway_responses_in_the_protocol_shape(shared: Template) -> None:
    responses = {
        r["Properties"]["ResponseType"]: r["Properties"]
        for r in shared.find_resources("AWS::ApiGateway::GatewayResponse").values()
    }
    missing, refused = responses["UNAUTHORIZED"], responses["ACCESS_DENIED"]
    assert missing["StatusCode"] == "401" and missing["ResponseParameters"]["gatewayresponse.header.WWW-Authenticate"]
    # one static body for every route: a string error, which tritonclient, the openai SDK and curl all read
    body = json.loads(missing["ResponseTemplates"]["application/json"])
    assert isinstance(body["error"], str) and "Authorization: Bearer" in body["error"]
    assert refused["StatusCode"] == "403"
    assert refused["ResponseTemplates"] == {"application/json": "$context.authorizer.errorBody"}


def _resource_paths(template: dict[str, Any], shared: dict[str, Any]) -> dict[str, str]:
    """Logical id → full path of every API resource of a model stack (its roots imported from the shared stack)."""
    exports = {
        o["Export"]["Name"]: o["Value"]["Fn::GetAtt"][0] if "Fn::GetAtt" in o["Value"] else o["Value"].get("Ref")
        for o in shared.get("Outputs", {}).values()
        if "Export" in o
    }
    shared_paths = _paths(shared["Resources"], {})
    paths: dict[str, str] = {}
    resources = template["Resources"]
    for logical_id in resources:
        if resources[logical_id]["Type"] == "AWS::ApiGateway::Resource":
            paths[logical_id] = _path(logical_id, resources, exports, shared_paths)
    return paths


def _paths(resources: dict[str, Any], exports: dict[str, str]) -> dict[str, str]:
    return {
        k: _path(k, resources, exports, {}) for k, r in resources.items() if r["Type"] == "AWS::ApiGateway::Resource"
    }


def _path(logical_id: str, resources: dict[str, Any], exports: dict[str, str], shared_paths: dict[str, str]) -> str:
    props = resources[logical_id]["Properties"]
    parent = props["ParentId"]
    if "Ref" in parent:
        prefix = _path(parent["Ref"], resources, exports, shared_paths)
    elif "Fn::ImportValue" in parent:
        prefix = shared_paths[exports[parent["Fn::ImportValue"]]]
    else:  # the API's root resource
        prefix = ""
    return f"{prefix}/{props['PathPart']}"


def test_every_method_uses_the_authorizer_of_its_protocol(default_app: Synth) -> None:
    shared_json = default_app.json(SHARED)
    names = {
        k: r["Properties"]["Name"] for k, r in shared_json["Resources"].items() if r["Type"].endswith("Authorizer")
    }
    exports = {o["Export"]["Name"]: o["Value"].get("Ref") for o in shared_json["Outputs"].values() if "Export" in o}
    checked = 0
    for stack in default_app.model_stacks().values():
        template = default_app.json(stack)
        paths = _resource_paths(template, shared_json)
        for method in (r["Properties"] for r in template["Resources"].values() if r["Type"].endswith("::Method")):
            path = paths[method["ResourceId"]["Ref"]]
            authorizer = names[exports[method["AuthorizerId"]["Fn::ImportValue"]]]
            assert authorizer == f"maas-{STAGE}-{PROTOCOL_OF[path.split('/')[1]]}-keys", path
            assert method["AuthorizationType"] == "CUSTOM" and method["ApiKeyRequired"] is True
            checked += 1
    assert checked >= 20


def test_without_caching_no_identity_source_is_required(build: Build) -> None:
    shared = _stack(build({"m": lambda_entry()}, authorizerCacheTtlS="0"), "shared")
    for authorizer in shared.find_resources("AWS::ApiGateway::Authorizer").values():
        props = authorizer["Properties"]
        assert props["AuthorizerResultTtlInSeconds"] == 0 and "IdentitySource" not in props


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"authorizerCacheTtlS": "3601"}, "authorizerCacheTtlS must be 0..3600"),
        ({"authorizerCacheTtlS": "-1"}, "authorizerCacheTtlS must be an integer >= 0"),
        ({"apiAuth": "cognito"}, "apiAuth must be one of bearer, iam"),
    ],
)
def test_bad_auth_settings_are_refused(build: Build, context: dict[str, str], message: str) -> None:
    with pytest.raises(EnvironmentConfigError, match=message):
        build({"m": lambda_entry()}, **context)


def test_sigv4_stays_available_as_a_stage_option(build: Build) -> None:
    app = build({"m": lambda_entry()}, apiAuth="iam")
    shared, model = _stack(app, "shared"), _stack(app, "model-m")
    shared.has_resource_properties("AWS::ApiGateway::RestApi", {"ApiKeySourceType": "HEADER"})
    shared.resource_count_is("AWS::ApiGateway::Authorizer", 0)
    shared.resource_count_is("AWS::DynamoDB::Table", 0)
    for template in (shared, model):
        for method in template.find_resources("AWS::ApiGateway::Method").values():
            assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
            assert method["Properties"]["ApiKeyRequired"] is True and "AuthorizerId" not in method["Properties"]
