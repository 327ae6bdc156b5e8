"""Structured logs and CloudWatch EMF metrics for the event paths.

Metrics get a default namespace (``maas``) unless ``POWERTOOLS_METRICS_NAMESPACE`` is set, so a
function deployed without it still publishes instead of failing at flush.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

logger = Logger(service=os.getenv("POWERTOOLS_SERVICE_NAME") or "maas")
metrics = Metrics(namespace=os.getenv("POWERTOOLS_METRICS_NAMESPACE") or "maas")

__all__ = ["MetricUnit", "logger", "metrics"]
