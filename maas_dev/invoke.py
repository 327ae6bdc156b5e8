"""Run the Lambda handler matching an event (HTTP, S3 or SQS) locally, with a realistic context."""

from __future__ import annotations

import importlib
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
    module = importlib.import_module(handler_module_for(event))
    return module.handler(event, DeadlineContext(30))
