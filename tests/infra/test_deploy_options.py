"""GIVEN the deploy options a stage or a catalog entry sets WHEN the app is synthesized THEN the template
carries them: reserved concurrency for the event functions, SnapStart, an alarm-gated CodeDeploy rollout,
alarm subscribers, the WAF per-IP limit, and the stage's choice of models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from functions.contract.errors import CatalogError
from infra.errors import EnvironmentConfigError
from tests.infra.conftest import STAGE, gpu_entry, lambda_entry

Build = Callable[..., cdk.App]


def _stack(app: cdk.App, suffix: str) -> Template:
    stack = next(s for s in app.node.children if isinstance(s, cdk.Stack) and s.stack_name.endswith(suffix))
    return Template.from_stack(stack)


def _functions(template: Template) -> dict[str, dict[str, Any]]:
    return {
        f["Properties"]["Handler"].split(".")[2]: f["Properties"]
        for f in template.find_resources("AWS::Lambda::Function").values()
        if f["Properties"].get("Handler", "").startswith("functions.handlers.")
    }


def test_event_functions_get_the_stages_reserved_concurrency_and_an_entry_can_override_it(build: Build) -> None:
    app = build({"a": lambda_entry(), "b": lambda_entry(batch_reserved_concurrency=2, openai_route=False)})
    a, b = _functions(_stack(app, "model-a")), _functions(_stack(app, "model-b"))
    assert a["s3"]["ReservedConcurrentExecutions"] == a["sqs"]["ReservedConcurrentExecutions"] == 5  # stage default
    assert b["s3"]["ReservedConcurrentExecutions"] == b["sqs"]["ReservedConcurrentExecutions"] == 2
    assert "ReservedConcurrentExecutions" not in a["http"]  # the HTTP function keeps the account's pool
    unreserved = _functions(_stack(build({"c": lambda_entry()}, batchReservedConcurrency="0"), "model-c"))
    assert "ReservedConcurrentExecutions" not in unreserved["s3"]


def test_snap_start_is_a_per_model_option_on_published_versions(build: Build) -> None:
    functions = _functions(_stack(build({"m": lambda_entry(snap_start=True)}), "model-m"))
    assert all(f["SnapStart"] == {"ApplyOn": "PublishedVersions"} for f in functions.values())
    plain = _functions(_stack(build({"p": lambda_entry()}), "model-p"))
    assert all("SnapStart" not in f for f in plain.values())


@pytest.mark.parametrize(
    ("deploy", "why"),
    [
        ({"snap_start": True, "provisioned_concurrency": 1}, "provisioned_concurrency"),
        ({"snap_start": True, "package": "image"}, 'package = "image"'),
        ({"snap_start": True, "ephemeral_storage_mb": 1024}, "ephemeral_storage_mb above 512"),
    ],
)
def test_snap_start_refuses_what_aws_does_not_combine_with_it(build: Build, deploy: dict[str, Any], why: str) -> None:
    with pytest.raises(CatalogError, match=f"snap_start cannot be used with {why}"):
        build({"m": lambda_entry(**deploy)})


def test_a_canary_rollout_is_gated_by_the_models_alarms(build: Build) -> None:
    template = _stack(build({"m": lambda_entry(rollout="canary-10-percent-5-minutes")}), "model-m")
    template.has_resource_properties(
        "AWS::CodeDeploy::DeploymentGroup",
        {
            "DeploymentConfigName": "CodeDeployDefault.LambdaCanary10Percent5Minutes",
            "AlarmConfiguration": {"Enabled": True, "Alarms": Match.any_value()},
            "AutoRollbackConfiguration": {
                "Enabled": True,
                "Events": Match.array_with(["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]),
            },
        },
    )
    (group,) = template.find_resources("AWS::CodeDeploy::DeploymentGroup").values()
    assert len(group["Properties"]["AlarmConfiguration"]["Alarms"]) == 2  # invocation errors and 5xx answers
    (alias,) = [
        a for a in template.find_resources("AWS::Lambda::Alias").values() if "UpdatePolicy" in a
    ]  # the HTTP alias shifts through CodeDeploy
    assert "CodeDeployLambdaAliasUpdate" in alias["UpdatePolicy"]
    plain = _stack(build({"p": lambda_entry()}), "model-p")
    plain.resource_count_is("AWS::CodeDeploy::DeploymentGroup", 0)


def test_alarm_subscribers_come_from_the_stage(build: Build) -> None:
    subscribers = '["mailto:oncall@example.com", "https://hooks.example.com/maas"]'
    shared = _stack(build({"m": lambda_entry()}, alarmSubscriptions=subscribers), f"{STAGE}-shared")
    shared.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.com"})
    shared.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "https", "Endpoint": "https://hooks.example.com/maas"}
    )


def test_the_waf_per_ip_rule_uses_the_stage_setting(build: Build) -> None:
    api = _stack(build({"m": lambda_entry()}, waf="true", wafIpRateLimit="1200"), f"{STAGE}-api")
    (acl,) = api.find_resources("AWS::WAFv2::WebACL").values()
    (rule,) = [r for r in acl["Properties"]["Rules"] if r["Name"] == "RateLimitPerIp"]
    assert rule["Statement"]["RateBasedStatement"] == {"AggregateKeyType": "IP", "Limit": 1200}


def test_a_stage_deploys_the_models_it_names_and_refuses_unknown_ones(build: Build) -> None:
    models = {"a": lambda_entry(), "g": gpu_entry()}
    app = build(models, models='["a"]')
    names = {s.stack_name for s in app.node.children if isinstance(s, cdk.Stack)}
    assert f"maas-{STAGE}-model-a" in names and f"maas-{STAGE}-model-g" not in names
    with pytest.raises(EnvironmentConfigError, match=r"deploys nope, which the catalog does not have"):
        build(models, models='["a", "nope"]')
