"""Pure ASGI middleware around every request: its id, its access log line and metrics, and the last word on errors.

Whatever escapes the app (the routes render their own errors; this catches what a bug lets through) is
answered here with a 500 in the route's protocol shape, quoting the request id: the connection stays usable,
never reset, and the server's own error page is never reached.
"""

from __future__ import annotations

import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from functions.telemetry import RequestMetrics, logger, request_scope
from functions.web.security import send_error


class RequestContextMiddleware:
    """Give every request an id (caller's ``x-request-id``, Lambda's request id, or a new one), put it on every
    log line of the request, log the access line and publish the request's metrics (EMF) once it is answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        context = scope.get("aws.context")
        request_id = (
            headers.get(b"x-request-id", b"").decode("latin-1")[:128]
            or getattr(context, "aws_request_id", None)
            or uuid.uuid4().hex
        )
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["metrics"] = record = RequestMetrics()
        status = {"code": 500}
        started = time.perf_counter()
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal started_response
            if message["type"] == "http.response.start":
                started_response = True
                status["code"] = message["status"]
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message["headers"] = [*kept, (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        with request_scope(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                logger.exception("unhandled error")
                if started_response:
                    raise  # the response is half sent: only closing the connection can tell the client
                message = f"internal error; quote request id {request_id}"
                await send_error(scope, send_with_id, 500, "internal_error", message)
            finally:
                latency_ms = (time.perf_counter() - started) * 1000
                logger.info(
                    "request",
                    extra={
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status["code"],
                        "latency_ms": round(latency_ms, 2),
                        "model": record.model,
                    },
                )
                record.publish(status=status["code"], latency_ms=latency_ms)
