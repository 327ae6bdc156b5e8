"""SQS entry point: inference requests from a queue, replies to allow-listed destinations.

Returns a partial batch response (``batchItemFailures``): the event source mapping must enable
``ReportBatchItemFailures``. The model loads once at import (Lambda's init phase); the reply
allow-list and prefixes are validated there too. See docs/batch.md.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from functions.batch.replies import allowlist_for
from functions.batch.s3io import dynamodb_client, s3_client, sqs_client
from functions.batch.sqs_jobs import SqsInferenceRunner
from functions.handlers.snapstart import register_hooks
from functions.inference.registry import get_registry
from functions.settings import get_settings
from functions.telemetry import logger, metrics

allowlist_for(get_settings())  # an unsafe layout stops the function at init, before any event
get_registry()
register_hooks()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    settings = get_settings()
    runner = SqsInferenceRunner(
        settings,
        get_registry(),
        s3=s3_client(settings.expected_bucket_owner),
        sqs=sqs_client(),
        dynamodb=dynamodb_client() if settings.idempotency_table else None,
    )
    return runner.handle(event, context)
