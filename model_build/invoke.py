"""Run the Lambda handler matching an event (HTTP, S3 or SQS) locally, with a realistic context."""

from __future__ import annotations

import importlib
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LocalLambdaContext:
    function_name: str = "maas-local"
    memory_limit_in_mb: int = 2048
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:maas-local"
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/maas-local"
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


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
    return module.handler(event, LocalLambdaContext())
