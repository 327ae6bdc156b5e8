"""Run the Lambda handler matching an event (HTTP, S3 or SQS) locally, with a realistic context."""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any

from functions.context import DeadlineContext


def handler_module_for(event: dict[str, Any]) -> str:
    records = event.get("Records") or []
    source = records[0].get("eventSource", "") if records and isinstance(records[0], dict) else ""
    if source == "aws:s3":
        return "functions.handlers.s3"
    if source == "aws:sqs":
        return "functions.handlers.sqs"
    return "functions.handlers.http"


def invoke_event(event: dict[str, Any]) -> Any:
    """The handler's response. What it writes to stdout (its EMF metrics, as on Lambda) goes to stderr here,
    so stdout carries the response alone."""
    module = importlib.import_module(handler_module_for(event))
    with contextlib.redirect_stdout(sys.stderr):
        return module.handler(event, DeadlineContext(30))
