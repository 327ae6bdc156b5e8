"""Each request's deadline: the soonest of what its deployment allows, set before anything else runs.

- ``MAAS_REQUEST_TIMEOUT_S`` (infra sets it to the API Gateway integration timeout on the GPU server and to the
  function's timeout on Lambda), counted from the request's arrival at the app;
- on Lambda behind Mangum, the invocation's remaining time (the Lambda context in the ASGI scope);
- on Lambda behind the Lambda Web Adapter (streaming generation), the invocation's deadline the adapter passes in
  its ``x-amzn-lambda-context`` header (epoch milliseconds).

A margin is kept for the answer to travel back. Generation reads the deadline
(:mod:`functions.inference.decoding.deadline`) and stops in time with ``finish_reason = "length"``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from functions.contract.deployment import LAMBDA_CONTEXT_HEADER
from functions.inference.decoding.deadline import deadline_scope

MARGIN_S = 1.0  # left for serializing the answer and for API Gateway to pass it on


def lambda_deadline_s(scope: Scope) -> float | None:
    """Seconds the current Lambda invocation has left, if the request came through Lambda."""
    context = scope.get("aws.context")
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if callable(remaining):
        try:
            return float(remaining()) / 1000
        except (TypeError, ValueError):
            return None
    header = LAMBDA_CONTEXT_HEADER.encode()
    for key, value in scope.get("headers") or []:
        if key.lower() == header:
            return _adapter_deadline_s(value)
    return None


def _adapter_deadline_s(value: bytes) -> float | None:
    try:
        data: Any = json.loads(value)
        deadline_ms = float(data["deadline"])
    except (ValueError, TypeError, KeyError):
        return None
    return deadline_ms / 1000 - time.time()


class DeadlineMiddleware:
    """Put the request's deadline (a ``time.monotonic()`` value) in context for the work the request starts."""

    def __init__(self, app: ASGIApp, timeout_s: float = 0.0, margin_s: float = MARGIN_S) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.margin_s = margin_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = [self.timeout_s] if self.timeout_s > 0 else []
        remaining = lambda_deadline_s(scope)
        if remaining is not None:
            limits.append(remaining)
        deadline = time.monotonic() + min(limits) - self.margin_s if limits else None
        with deadline_scope(deadline):
            await self.app(scope, receive, send)
