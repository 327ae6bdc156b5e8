"""Step Functions entry point of chunked S3 jobs: one function for the plan, each chunk and the merge.

The state machine (infra/constructs/batch_state_machine.py) calls it with:

- ``{"step": "plan", "event": <EventBridge Object Created event>, "execution": <execution id>}``;
- the Distributed Map's batches, ``{"BatchInput": {"step": "chunk", "run": {...}}, "Items": [<chunk>, ...]}``;
- ``{"step": "merge", "run": {...}}``;

and EventBridge calls it with ``Step Functions Execution Status Change`` when an execution failed, timed out or
was aborted (the job's summary then says ``failed`` and how to redrive it). Like the S3 handler it validates the
batch settings and loads the model at import (Lambda's init phase). See functions/batch/chunked_jobs.py.
"""

from __future__ import annotations

from typing import Any

from functions.batch.chunked_jobs import ChunkedJobRunner
from functions.batch.replies import allowlist_for
from functions.batch.s3io import dynamodb_client, s3_client
from functions.handlers.snapstart import register_hooks
from functions.inference.registry import get_registry
from functions.settings import get_settings
from functions.telemetry import MetricUnit, logger, metrics

allowlist_for(get_settings())  # an unsafe layout stops the function at init, before any event
get_registry()
register_hooks()


class UnknownStepError(ValueError):
    """An event this function has no step for (a wiring mistake: it fails loudly, never silently)."""


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings = get_settings()
    metrics.add_metric(name="BatchJobSteps", unit=MetricUnit.Count, value=1)
    runner = ChunkedJobRunner(settings, get_registry(), s3_client(settings.expected_bucket_owner),
                              dynamodb_client() if settings.idempotency_table else None)
    if isinstance(event.get("BatchInput"), dict) and isinstance(event.get("Items"), list):
        run = event["BatchInput"]["run"]
        return {"chunks": [runner.chunk(run, item, context) for item in event["Items"]]}
    step = event.get("step")
    if step == "plan":
        return dict(runner.plan(event["event"], str(event["execution"]), context))
    if step == "merge":
        summary = runner.merge(event["run"])
        return {"status": summary["status"], "counts": summary["counts"], "output": summary["output"]}
    if event.get("source") == "aws.states":
        failed = runner.failed(event)
        return {"status": failed["status"] if failed else "ignored"}
    raise UnknownStepError(f"no step for this event (keys: {sorted(event)[:10]}); expected plan, a Map batch, "
                           "merge, or an execution status change")
