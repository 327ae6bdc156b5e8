"""HTTP entry point: API Gateway REST (v1) and HTTP API (v2), ALB and function URL events via Mangum.

The model loads here, at import — Lambda's init phase — and never inside a request. Mangum runs
with ``lifespan="off"``: its lifespan would otherwise run on every invocation. The same ``app``
is what uvicorn serves in the GPU container (``uvicorn functions.handlers.http:app``). An event
that is not a readable HTTP request is answered 400, never raised (``functions.web.lambda_events``).
"""

from __future__ import annotations

from typing import Any

from functions.handlers.snapstart import register_hooks
from functions.inference.registry import get_registry
from functions.telemetry import logger
from functions.web.app import create_app
from functions.web.lambda_events import LambdaHttpAdapter

app = create_app(get_registry())
_adapter = LambdaHttpAdapter(app)
register_hooks()  # SnapStart: renew AWS clients and count the restore as a cold start


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return _adapter(event, context)
