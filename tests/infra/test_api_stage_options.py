"""GIVEN the API stage THEN each usage plan throttles every method of a text-generation model on its own (lower)
limits, and a stage may serve the API on a regional custom domain (ACM certificate, TLS 1.2+) mapped at a base
path; wrong domain settings are refused before anything is deployed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from infra.errors import EnvironmentConfigError
from infra.settings import DEFAULT_TIERS
from tests.infra.conftest import REGION, STAGE, Synth, lambda_entry

Build = Callable[..., cdk.App]
CERT = f"arn:aws:acm:{REGION}:123456789012:certificate/0a1b2c3d-4e5f-6789-abcd-ef0123456789"


def _stack(app: cdk.App, suffix: str) -> Template:
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith(suffix))
    return Template.from_stack(stack)


def test_generation_methods_have_their_own_throttle_in_every_plan(default_app: Synth) -> None:
    api = default_app.template(f"maas-{STAGE}-api")
    plans = {
        p["Properties"]["UsagePlanName"]: p["Properties"]
        for p in api.find_resources("AWS::ApiGateway::UsagePlan").values()
    }
    expected = {
        "/models/smollm2-chat/GET",
        "/models/smollm2-chat/{proxy+}/GET",
        "/models/smollm2-chat/{proxy+}/POST",
        "/v2/models/smollm2-chat/GET",
        "/v2/models/smollm2-chat/{proxy+}/GET",
        "/v2/models/smollm2-chat/{proxy+}/POST",
        "/v1/completions/POST",
        "/v1/chat/completions/POST",
    }
    for tier, spec in DEFAULT_TIERS.items():
        (stage,) = plans[f"maas-{STAGE}-{tier}"]["ApiStages"]
        throttles = stage["Throttle"]
        assert set(throttles) == expected, tier  # generation only: embeddings keep the plan's own limit
        for limit in throttles.values():
            assert limit == {"RateLimit": spec["generation_rate_limit"], "BurstLimit": spec["generation_burst_limit"]}
            assert limit["RateLimit"] < spec["rate_limit"]


def test_a_stage_without_generation_models_has_no_method_throttles(build: Build) -> None:
    api = _stack(build({"m": lambda_entry()}), "api")
    for plan in api.find_resources("AWS::ApiGateway::UsagePlan").values():
        assert not plan["Properties"]["ApiStages"][0].get("Throttle")  # CDK renders an empty map


def test_generation_limits_default_to_a_tenth_of_the_tier(build: Build) -> None:
    tiers = '{"gold": {"rate_limit": 100, "burst_limit": 300, "quota_limit": 1000, "quota_period": "DAY"}}'
    api = _stack(build({"g": lambda_entry("text-generation")}, tiers=tiers, tenants="{}"), "api")
    (plan,) = api.find_resources("AWS::ApiGateway::UsagePlan").values()
    limits = set((v["RateLimit"], v["BurstLimit"]) for v in plan["Properties"]["ApiStages"][0]["Throttle"].values())
    assert limits == {(10, 30)}


def test_custom_domain_is_regional_tls12_and_maps_the_stage_at_its_base_path(build: Build) -> None:
    app = build({"m": lambda_entry()}, domainName="ml.example.com", certificateArn=CERT, basePath="inference")
    api = _stack(app, "api")
    api.has_resource_properties(
        "AWS::ApiGateway::DomainName",
        {
            "DomainName": "ml.example.com",
            "RegionalCertificateArn": CERT,
            "EndpointConfiguration": {"Types": ["REGIONAL"]},
            "SecurityPolicy": "TLS_1_2",
        },
    )
    (mapping,) = api.find_resources("AWS::ApiGateway::BasePathMapping").values()
    props: dict[str, Any] = mapping["Properties"]
    assert props["BasePath"] == "inference" and props["Stage"] == {
        "Ref": next(iter(api.find_resources("AWS::ApiGateway::Stage")))
    }
    outputs = api.find_outputs("*")
    assert any(o.get("Value") == "https://ml.example.com/inference/" for o in outputs.values())


def test_no_domain_unless_asked(default_app: Synth) -> None:
    default_app.template(f"maas-{STAGE}-api").resource_count_is("AWS::ApiGateway::DomainName", 0)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"domainName": "ml.example.com"}, "needs both domainName and certificateArn"),
        ({"certificateArn": CERT}, "needs both domainName and certificateArn"),
        ({"basePath": "v1"}, "basePath maps the API under a custom domain"),
        ({"domainName": "ml.example.com", "certificateArn": "arn:aws:iam::123456789012:role/x"}, "not an ACM"),
        (
            {"domainName": "ml.example.com", "certificateArn": CERT.replace(REGION, "us-east-1")},
            "a regional API's domain needs a certificate in the stage's region",
        ),
        ({"domainName": "not a domain", "certificateArn": CERT}, "is not a DNS name"),
        ({"domainName": "ml.example.com", "certificateArn": CERT, "basePath": "a/b/c"}, "one or two path segments"),
        ({"domainName": "ml.example.com", "certificateArn": CERT, "domainSecurityPolicy": "TLS_1_0"}, "must be one of"),
    ],
)
def test_wrong_domain_settings_are_refused(build: Build, context: dict[str, str], message: str) -> None:
    with pytest.raises(EnvironmentConfigError, match=message):
        build({"m": lambda_entry()}, **context)


def test_the_options_pass_cdk_nag_and_cfn_lint(build: Build, tmp_path: Any) -> None:
    """The custom domain and an uncached authorizer, synthesized with cdk-nag on and linted, as CI does the default."""
    from cfnlint.api import ManualArgs, lint_file

    app = build(
        {"m": lambda_entry(), "g": lambda_entry("text-generation", openai_route=True)},
        domainName="ml.example.com",
        certificateArn=CERT,
        authorizerCacheTtlS="0",
        nag="true",
    )
    assembly = app.synth()  # raises on any unacknowledged cdk-nag finding
    problems = [
        f"{path.name}: {match.rule.id} {match.message}"
        for path in sorted(Path(assembly.directory).glob("*.template.json"))
        for match in lint_file(path, config=ManualArgs(regions=[REGION]))
        if match.rule.id not in ("W3005", "W3010")
    ]
    assert not problems, problems
