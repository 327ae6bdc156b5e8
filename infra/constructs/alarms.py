"""Alarms and dashboards: one set per model (errors, throttles, p99 latency, DLQ depth) and one for the API.

The model stacks hand :class:`ModelAlarms` the metrics of whatever serves the model (Lambda functions
or an ECS service), so both targets get the same four alarms and a dashboard of the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from functions.contract.deployment import METRICS_NAMESPACE, HttpMetric, service_name
from infra.config import ModelSpec
from infra.settings import EnvironmentConfig

FIVE_MINUTES = cdk.Duration.minutes(5)


def above(
    scope: Construct, construct_id: str, metric: cw.IMetric, threshold: float, description: str, *, periods: int = 1
) -> cw.Alarm:
    """An alarm when ``metric`` stays above ``threshold`` for ``periods`` periods; no data is not a breach."""
    return cw.Alarm(
        scope,
        construct_id,
        alarm_description=description,
        metric=metric,
        threshold=threshold,
        comparison_operator=cw.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=periods,
        treat_missing_data=cw.TreatMissingData.NOT_BREACHING,
    )


@dataclass(frozen=True)
class ModelSignals:
    """The metrics one model's alarms watch, whatever its target."""

    errors: cw.IMetric
    throttles: cw.IMetric
    throttles_description: str
    latency_p99: cw.IMetric
    latency_threshold_ms: float
    dead_letter_queues: Sequence[sqs.IQueue]
    extra_widgets: Sequence[cw.IWidget] = field(default=())


def model_metric(spec: ModelSpec, metric: HttpMetric, statistic: str) -> cw.Metric:
    """One of the metrics the model's HTTP path publishes per request (EMF, functions/telemetry.py)."""
    return cw.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=metric.value,
        dimensions_map={"service": service_name(spec.name), "model": spec.name},
        statistic=statistic,
        period=FIVE_MINUTES,
    )


class ModelAlarms(Construct):
    """Errors, 5xx answers, throttles, p99 latency and DLQ depth > 0 for one model, plus its dashboard.

    The target's own metrics (Lambda invocations, the API Gateway integration) catch what the app never
    sees (a timeout, a crash); the app's per-request metrics catch what those count as success (a 500 the app
    answered itself) and show the traffic by model: requests, errors, latency, inputs and tokens, cold starts.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        spec: ModelSpec,
        settings: EnvironmentConfig,
        topic: sns.ITopic,
        signals: ModelSignals,
    ) -> None:
        super().__init__(scope, construct_id)
        action = actions.SnsAction(topic)
        name = f"{settings.prefix}-{spec.name}"
        self.alarms: dict[str, cw.Alarm] = {
            "errors": above(
                self, "Errors", signals.errors, 0, f"{name}: invocations failed (unhandled errors, timeouts or 5XX)"
            ),
            "server_errors": above(
                self,
                "ServerErrors",
                model_metric(spec, HttpMetric.SERVER_ERRORS, "Sum"),
                0,
                f"{name}: the app answered 5xx (a model that failed to load, or an internal error)",
            ),
            "throttles": above(self, "Throttles", signals.throttles, 0, f"{name}: {signals.throttles_description}"),
            "latency": above(
                self,
                "LatencyP99",
                signals.latency_p99,
                signals.latency_threshold_ms,
                f"{name}: p99 latency above {signals.latency_threshold_ms:.0f} ms for 15 minutes",
                periods=3,
            ),
        }
        for index, queue in enumerate(signals.dead_letter_queues):
            self.alarms[f"dlq{index}"] = above(
                self,
                f"DeadLetters{index}",
                queue.metric_approximate_number_of_messages_visible(
                    period=cdk.Duration.minutes(1), statistic="Maximum"
                ),
                0,
                f"{name}: messages in a dead-letter queue (failed after all retries)",
            )
        for alarm in self.alarms.values():
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=name)
        dashboard.add_widgets(
            cw.AlarmWidget(title="Errors", alarm=self.alarms["errors"], width=8),
            cw.AlarmWidget(title="Throttles / saturation", alarm=self.alarms["throttles"], width=8),
            cw.AlarmWidget(title="p99 latency (ms)", alarm=self.alarms["latency"], width=8),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Requests and errors (app)",
                left=[
                    model_metric(spec, HttpMetric.REQUESTS, "Sum"),
                    model_metric(spec, HttpMetric.CLIENT_ERRORS, "Sum"),
                    model_metric(spec, HttpMetric.SERVER_ERRORS, "Sum"),
                ],
                right=[model_metric(spec, HttpMetric.COLD_START, "Sum")],
                width=8,
            ),
            cw.GraphWidget(
                title="Latency in the app (ms)",
                left=[model_metric(spec, HttpMetric.LATENCY, s) for s in ("p50", "p99")],
                width=8,
            ),
            cw.GraphWidget(
                title="Inputs and tokens",
                left=[model_metric(spec, HttpMetric.INPUTS, "Sum")],
                right=[model_metric(spec, m, "Sum") for m in (HttpMetric.INPUT_TOKENS, HttpMetric.OUTPUT_TOKENS)],
                width=8,
            ),
        )
        dashboard.add_widgets(
            cw.GraphWidget(
                title="Dead-letter queues",
                left=[
                    q.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(1))
                    for q in signals.dead_letter_queues
                ],
                width=12,
            ),
            *signals.extra_widgets,
        )


class ApiAlarms(Construct):
    """API-wide alarms (5XX rate, p99 latency) and the shared dashboard, from the stage's metrics."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentConfig,
        topic: sns.ITopic,
        models: Sequence[ModelSpec],
    ) -> None:
        super().__init__(scope, construct_id)
        dims = {"ApiName": settings.api_name, "Stage": settings.stage}

        def metric(name: str, statistic: str) -> cw.Metric:
            return cw.Metric(
                namespace="AWS/ApiGateway",
                metric_name=name,
                dimensions_map=dims,
                statistic=statistic,
                period=FIVE_MINUTES,
            )

        action = actions.SnsAction(topic)
        server_errors = above(
            self,
            "ServerErrorRate",
            metric("5XXError", "Average"),
            0.01,
            f"{settings.api_name}: more than 1% of requests answered 5XX for 15 minutes",
            periods=3,
        )
        latency = above(
            self,
            "LatencyP99",
            metric("Latency", "p99"),
            0.8 * 1000 * settings.api_timeout_quota_s,
            f"{settings.api_name}: p99 latency above 80% of the integration timeout",
            periods=3,
        )
        for alarm in (server_errors, latency):
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
        dashboard = cw.Dashboard(self, "Dashboard", dashboard_name=f"{settings.prefix}-overview")
        dashboard.add_widgets(
            cw.GraphWidget(title="Requests", left=[metric("Count", "Sum")], width=8),
            cw.GraphWidget(
                title="Error rates", left=[metric("4XXError", "Average"), metric("5XXError", "Average")], width=8
            ),
            cw.GraphWidget(title="Latency", left=[metric("Latency", "p50"), metric("Latency", "p99")], width=8),
        )
        dashboard.add_widgets(
            cw.TextWidget(
                markdown="**Models:** "
                + ", ".join(f"`{m.name}` ({m.target}, dashboard `{settings.prefix}-{m.name}`)" for m in models),
                width=24,
                height=2,
            )
        )
