"""The code a preview synth (``-c packaging=preview``) ships instead of the runtime: it refuses every call.

A preview zip has no runtime dependencies (``infra.build_deps`` was not run) and maybe no model, so the real
handlers could only crash on import. This handler answers instead, saying how to deploy for real: an HTTP
event gets a 503 in the task API's error shape; an S3 or SQS event raises, so the event is retried and ends
in the model's failure queue or dead-letter queue — never acknowledged and lost. It is staged as
``functions/handlers/{http,s3,sqs}.py``, the handler paths the template names.
"""

from __future__ import annotations

import json
from typing import Any

MESSAGE = (
    "this function was deployed from a preview synth (cdk synth/deploy -c packaging=preview): it carries "
    "neither the maas runtime nor its model. Build the dependencies (python -m infra.build_deps --arch <arch>) "
    "and the models (maas build <name>), then deploy with the default strict packaging"
)


class PreviewDeploymentError(RuntimeError):
    """Raised for every event a preview deployment receives (so event sources retry and dead-letter them)."""


def handler(event: Any, context: Any) -> dict[str, Any]:
    records = event.get("Records") if isinstance(event, dict) else None
    if records:
        raise PreviewDeploymentError(MESSAGE)
    body = {"error": {"code": "preview_deployment", "message": MESSAGE, "param": None}}
    return {"statusCode": 503, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
