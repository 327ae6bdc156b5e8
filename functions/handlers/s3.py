"""S3 entry point: an object created under ``<MAAS_INPUT_PREFIX><model>/`` → a batch inference job.

At import — Lambda's init phase — the batch settings are validated (an output prefix that could
re-trigger the function stops the function from starting, with a clear error) and the model is
loaded once. See docs/batch.md for formats, layout and guarantees.
"""

from __future__ import annotations

from typing import Any

from functions.batch.replies import allowlist_for
from functions.batch.s3_jobs import S3JobRunner
from functions.batch.s3io import dynamodb_client, s3_client
from functions.handlers.snapstart import register_hooks
from functions.inference.registry import get_registry
from functions.settings import get_settings
from functions.telemetry import logger, metrics

allowlist_for(get_settings())  # an unsafe layout stops the function at init, before any event
get_registry()
register_hooks()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    runner = S3JobRunner(
        settings,
        get_registry(),
        s3_client(settings.expected_bucket_owner),
        dynamodb_client() if settings.idempotency_table else None,
    )
    return runner.handle(event, context)
