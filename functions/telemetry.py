"""One Logger and one Metrics for the runtime, the request id on every log line, and per-request EMF metrics.

- ``logger``: Powertools' structured JSON logger. Its service is ``POWERTOOLS_SERVICE_NAME`` (infra sets
  ``maas-<model>``), ``maas`` when unset. :func:`request_scope` appends the request id to every line logged
  while a request is handled — in the event loop and in the worker threads it hands work to (the keys are
  context variables, so concurrent requests never see each other's id).
- ``metrics``: the batch paths' EMF metrics (one flush per Lambda invocation, ``@metrics.log_metrics``).
- :class:`RequestMetrics`: one EMF document per HTTP request (model, status, latency, inputs, tokens,
  cold start), flushed when the response is sent. A fresh Powertools ``EphemeralMetrics`` per request,
  so concurrent requests under uvicorn never share a buffer. Namespace ``POWERTOOLS_METRICS_NAMESPACE``
  (``maas`` when unset). The per-model dashboards and alarms (infra) read these metrics.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from functions.contract.deployment import METRICS_NAMESPACE, HttpMetric

SERVICE = os.getenv("POWERTOOLS_SERVICE_NAME") or "maas"
NAMESPACE = os.getenv("POWERTOOLS_METRICS_NAMESPACE") or METRICS_NAMESPACE

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)

# Metric names the HTTP path publishes (dimensions: service, model): the contract's, which infra's dashboards
# and alarms read too.
REQUESTS = HttpMetric.REQUESTS.value
CLIENT_ERRORS = HttpMetric.CLIENT_ERRORS.value
SERVER_ERRORS = HttpMetric.SERVER_ERRORS.value
LATENCY = HttpMetric.LATENCY.value
INPUTS = HttpMetric.INPUTS.value
INPUT_TOKENS = HttpMetric.INPUT_TOKENS.value
OUTPUT_TOKENS = HttpMetric.OUTPUT_TOKENS.value
COLD_START = HttpMetric.COLD_START.value
ERRORS_BY_CODE = HttpMetric.ERRORS_BY_CODE.value
IN_FLIGHT = HttpMetric.IN_FLIGHT.value

_cold_models: set[str] = set()


def reset_cold_start() -> None:
    """The next request to each model counts as a cold start again (a SnapStart restore is one)."""
    _cold_models.clear()


@contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Every log line inside carries ``request_id``; worker threads started inside inherit it."""
    logger.thread_safe_append_keys(request_id=request_id)
    try:
        yield
    finally:
        logger.thread_safe_remove_keys(["request_id"])


def publish_load(*, in_flight: int, waiting: int) -> None:
    """One load report of this server process (EMF, dimension ``service``): requests running or waiting."""
    document = EphemeralMetrics(namespace=NAMESPACE)
    document.add_dimension(name="service", value=SERVICE)
    document.add_metric(name=IN_FLIGHT, unit=MetricUnit.Count, value=in_flight + waiting)
    document.flush_metrics()


@dataclass
class RequestMetrics:
    """What one HTTP request did; routes fill in the model and the counts, the middleware the rest."""

    model: str | None = None
    inputs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    error_code: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def publish(self, *, status: int, latency_ms: float) -> None:
        """Emit the request's EMF document(s) on stdout (CloudWatch turns them into metrics)."""
        model = self.model or "none"
        document = EphemeralMetrics(namespace=NAMESPACE)
        document.add_dimension(name="service", value=SERVICE)
        document.add_dimension(name="model", value=model)
        document.add_metric(name=REQUESTS, unit=MetricUnit.Count, value=1)
        document.add_metric(name=CLIENT_ERRORS, unit=MetricUnit.Count, value=int(400 <= status < 500))
        document.add_metric(name=SERVER_ERRORS, unit=MetricUnit.Count, value=int(status >= 500))
        document.add_metric(name=LATENCY, unit=MetricUnit.Milliseconds, value=round(latency_ms, 3))
        if self.model is not None:
            document.add_metric(name=INPUTS, unit=MetricUnit.Count, value=self.inputs)
            document.add_metric(name=INPUT_TOKENS, unit=MetricUnit.Count, value=self.input_tokens)
            document.add_metric(name=OUTPUT_TOKENS, unit=MetricUnit.Count, value=self.output_tokens)
            if self.model not in _cold_models:
                _cold_models.add(self.model)
                document.add_metric(name=COLD_START, unit=MetricUnit.Count, value=1)
        for name, value in self.extra.items():
            document.add_metric(name=name, unit=MetricUnit.Count, value=value)
        document.flush_metrics()
        if status >= 400:
            by_code = EphemeralMetrics(namespace=NAMESPACE)
            by_code.add_dimension(name="service", value=SERVICE)
            by_code.add_dimension(name="model", value=model)
            by_code.add_dimension(name="code", value=self.error_code or str(status))
            by_code.add_metric(name=ERRORS_BY_CODE, unit=MetricUnit.Count, value=1)
            by_code.flush_metrics()


__all__ = [
    "NAMESPACE",
    "SERVICE",
    "MetricUnit",
    "RequestMetrics",
    "logger",
    "metrics",
    "publish_load",
    "request_scope",
]
