"""GIVEN any model stack THEN it alarms on errors, throttles (saturation for GPU), p99 latency and any
message in a dead-letter queue, notifies the shared encrypted topic, and has its own dashboard."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.infra.conftest import STAGE, Synth


def _alarms(app: Synth, stack_name: str) -> list[dict[str, Any]]:
    """The model's own alarms (not the ones Application Auto Scaling creates for step scaling)."""
    model = stack_name.split("-model-", 1)[1]
    return [
        r["Properties"]
        for r in app.json(stack_name)["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
        and r["Properties"].get("AlarmDescription", "").startswith(f"maas-{STAGE}-{model}:")
    ]


def _metric_names(alarm: dict[str, Any]) -> set[str]:
    if "MetricName" in alarm:
        return {alarm["MetricName"]}
    return {m["MetricStat"]["Metric"]["MetricName"] for m in alarm.get("Metrics", []) if "MetricStat" in m}


@pytest.mark.parametrize("app_name", ["default_app", "variant_app"])
def test_every_model_has_the_four_alarm_kinds_and_a_dashboard(request: pytest.FixtureRequest, app_name: str) -> None:
    app: Synth = request.getfixturevalue(app_name)
    for model, stack_name in app.model_stacks().items():
        alarms = _alarms(app, stack_name)
        is_gpu = "AWS::ECS::Service" in str(app.json(stack_name))
        errors = {"5XXError"} if is_gpu else {"Errors"}
        assert any(_metric_names(a) == errors for a in alarms), f"{model}: no errors alarm"
        throttles = {"InFlight", "RunningTaskCount"} if is_gpu else {"Throttles"}
        assert any(_metric_names(a) == throttles for a in alarms), f"{model}: no throttles/saturation alarm"
        latency = [a for a in alarms if a.get("ExtendedStatistic") == "p99"]
        assert latency and all(a["Threshold"] > 0 for a in latency), f"{model}: no p99 latency alarm"
        dlq = [a for a in alarms if a.get("MetricName") == "ApproximateNumberOfMessagesVisible"]
        assert dlq, f"{model}: no dead-letter alarm"
        for alarm in dlq:
            assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
        for alarm in alarms:
            assert alarm["AlarmActions"] and alarm["OKActions"], f"{model}: alarm without a notification"
        dashboards = [
            r for r in app.json(stack_name)["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
        ]
        assert [d["Properties"]["DashboardName"] for d in dashboards] == [f"maas-{STAGE}-{model}"]


def test_lambda_models_watch_every_dead_letter_queue(default_app: Synth) -> None:
    stack = default_app.json(f"maas-{STAGE}-model-minilm-embed")["Resources"]
    queues = {k for k, r in stack.items() if r["Type"] == "AWS::SQS::Queue" and "RedrivePolicy" not in r["Properties"]}
    watched = {
        d["Value"]["Fn::GetAtt"][0]
        for a in _alarms(default_app, f"maas-{STAGE}-model-minilm-embed")
        for d in a.get("Dimensions", [])
        if d["Name"] == "QueueName"
    }
    assert queues == watched == {k for k in queues}  # the job DLQ and the S3 failure queue
    assert len(queues) == 2


def test_every_model_alarms_on_and_charts_the_metrics_its_app_publishes(default_app: Synth) -> None:
    """The per-request EMF metrics (functions/telemetry.py) are what the alarm and dashboard read: the same
    namespace, metric names and dimensions, all from the contract."""
    from functions.contract.deployment import METRICS_NAMESPACE, HttpMetric, service_name

    for model, stack_name in default_app.model_stacks().items():
        app_alarms = [a for a in _alarms(default_app, stack_name) if a.get("Namespace") == METRICS_NAMESPACE]
        assert [a["MetricName"] for a in app_alarms] == [HttpMetric.SERVER_ERRORS.value], model
        assert {d["Name"]: d["Value"] for d in app_alarms[0]["Dimensions"]} == {
            "service": service_name(model),
            "model": model,
        }
        (dashboard,) = [
            r for r in default_app.json(stack_name)["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"
        ]
        parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
        body = json.loads("".join(p if isinstance(p, str) else "token" for p in parts))
        metrics = [m for w in body["widgets"] for m in w.get("properties", {}).get("metrics", [])]
        charted = {
            (m[0], m[1], tuple(sorted(zip(m[2:-1:2], m[3:-1:2], strict=True))))
            for m in metrics
            if m[0] == METRICS_NAMESPACE
        }
        dims = tuple(sorted({"service": service_name(model), "model": model}.items()))
        per_request = [m for m in HttpMetric if m not in (HttpMetric.ERRORS_BY_CODE, HttpMetric.IN_FLIGHT)]
        expected = {(METRICS_NAMESPACE, m.value, dims) for m in per_request}
        assert charted == expected, model
