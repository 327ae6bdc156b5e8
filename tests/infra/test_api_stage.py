"""GIVEN the API stage stack THEN the stage has access logs, X-Ray, throttling and a WAF, and every tenant
tier is a usage plan with throttling and a quota, with one API key per configured tenant."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template

from infra.settings import DEFAULT_TIERS
from tests.infra.conftest import STAGE, Synth

API = f"maas-{STAGE}-api"


@pytest.fixture(scope="module")
def api(default_app: Synth) -> Template:
    return default_app.template(API)


def test_stage_has_access_logs_xray_metrics_and_throttling(api: Template) -> None:
    api.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "StageName": STAGE,
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.string_like_regexp("apiKeyId")},
            "MethodSettings": Match.array_with(
                [
                    Match.object_like(
                        {
                            "HttpMethod": "*",
                            "ResourcePath": "/*",
                            "LoggingLevel": "ERROR",
                            "DataTraceEnabled": False,
                            "MetricsEnabled": True,
                            "ThrottlingRateLimit": 500,
                            "ThrottlingBurstLimit": 1000,
                        }
                    )
                ]
            ),
        },
    )


def test_access_log_format_is_json_with_the_caller_and_latency(api: Template) -> None:
    stage = next(iter(api.find_resources("AWS::ApiGateway::Stage").values()))
    fields = json.loads(stage["Properties"]["AccessLogSetting"]["Format"])
    assert {"requestId", "apiKeyId", "caller", "status", "latency", "integrationLatency", "errorMessage"} <= set(fields)


@pytest.mark.parametrize("tier", sorted(DEFAULT_TIERS))
def test_each_tier_is_a_usage_plan_with_throttle_and_quota(api: Template, tier: str) -> None:
    spec = DEFAULT_TIERS[tier]
    api.has_resource_properties(
        "AWS::ApiGateway::UsagePlan",
        {
            "UsagePlanName": f"maas-{STAGE}-{tier}",
            "Throttle": {"RateLimit": spec["rate_limit"], "BurstLimit": spec["burst_limit"]},
            "Quota": {"Limit": spec["quota_limit"], "Period": spec["quota_period"]},
            "ApiStages": [Match.object_like({"Stage": Match.any_value()})],
        },
    )


def test_each_tenant_gets_an_enabled_key_on_its_tier_plan(api: Template) -> None:
    # infra/stages/dev.toml: demo = "standard"
    keys = api.find_resources(
        "AWS::ApiGateway::ApiKey", {"Properties": {"Name": f"maas-{STAGE}-demo", "Enabled": True}}
    )
    assert len(keys) == 1
    key_id = next(iter(keys))
    plans = api.find_resources(
        "AWS::ApiGateway::UsagePlan", {"Properties": {"UsagePlanName": f"maas-{STAGE}-standard"}}
    )
    plan_id = next(iter(plans))
    api.has_resource_properties(
        "AWS::ApiGateway::UsagePlanKey",
        {"KeyId": {"Ref": key_id}, "UsagePlanId": {"Ref": plan_id}, "KeyType": "API_KEY"},
    )


def test_waf_protects_the_stage_without_blocking_long_text_bodies(api: Template) -> None:
    acl = next(iter(api.find_resources("AWS::WAFv2::WebACL").values()))["Properties"]
    assert acl["Scope"] == "REGIONAL" and acl["DefaultAction"] == {"Allow": {}}
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    assert rules["RateLimitPerIp"]["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    common = rules["AWSManagedRulesCommonRuleSet"]["Statement"]["ManagedRuleGroupStatement"]
    assert {o["Name"] for o in common["RuleActionOverrides"]} == {"SizeRestrictions_BODY", "CrossSiteScripting_BODY"}
    api.resource_count_is("AWS::WAFv2::WebACLAssociation", 1)


def test_deployment_changes_when_routes_change(default_app: Synth, variant_app: Synth) -> None:
    ids = [
        next(iter(app.template(API).find_resources("AWS::ApiGateway::Deployment")))
        for app in (default_app, variant_app)
    ]
    assert ids[0] != ids[1], "a different route table must produce a new deployment (redeploy the stage)"
