"""Run the Lambda handler matching an event locally, with a realistic context: HTTP, S3 (a notification or
EventBridge's Object Created), SQS, or a step of the chunked-job state machine (plan, a Map batch, merge, or the
execution status event of a failed run)."""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any

from functions.context import DeadlineContext


def handler_module_for(event: dict[str, Any]) -> str:
    if event.get("source") == "aws.s3" and event.get("detail-type") == "Object Created":
        return "functions.handlers.s3"
    if event.get("step") in ("plan", "merge") or "BatchInput" in event or event.get("source") == "aws.states":
        return "functions.handlers.chunk"
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
