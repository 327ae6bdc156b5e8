"""The app behind Lambda: Mangum for well-formed HTTP events, a 400 in the route's protocol shape for the rest.

API Gateway (REST and HTTP APIs), ALB and function URLs always send well-formed events, but a Lambda can be
invoked with anything (a console test, a mistyped integration, a caller with ``lambda:InvokeFunction``).
Mangum raises on what it cannot read — ``{}``, no ``httpMethod``/``path``/``requestContext.http``, a body
that is not a string, invalid base64 under ``isBase64Encoded`` — and a raising handler is a 502 at the
gateway, an error in the logs and a retried async invocation. Here everything that fails while *reading*
the event is answered with 400 saying what is wrong; the app itself answers every request it receives.
"""

from __future__ import annotations

from typing import Any

from mangum import Mangum
from mangum.types import ASGI

from functions.protocols.base import error_json, protocol_for_scope
from functions.telemetry import logger

_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class LambdaHttpAdapter:
    """``adapter(event, context)`` → the Lambda proxy response for an HTTP event, never an exception."""

    def __init__(self, app: ASGI) -> None:
        self.mangum = Mangum(app, lifespan="off")

    def __call__(self, event: Any, context: Any) -> dict[str, Any]:
        problem = self._unreadable(event, context)
        if problem is not None:
            logger.warning("malformed HTTP event", extra={"problem": problem})
            message = (
                f"the Lambda event is not a valid HTTP event: {problem}. Invoke the function through API Gateway, "
                "a function URL or an ALB"
            )
            return _error_response(event, context, 400, "invalid_event", message)
        try:
            return self.mangum(event, context)
        except Exception:  # the app answers every request; this is a fault in the adapter itself
            logger.exception("unhandled error formatting the HTTP response")
            message = f"internal error; quote request id {getattr(context, 'aws_request_id', 'unknown')}"
            return _error_response(event, context, 500, "internal_error", message)

    def _unreadable(self, event: Any, context: Any) -> str | None:
        """What makes the event unreadable as an HTTP request (None when Mangum can read it)."""
        if not isinstance(event, dict):
            return f"it is a JSON {type(event).__name__}, not an object"
        body = event.get("body")
        if body is not None and not isinstance(body, str):
            return f"'body' must be a string (or null), not a {type(body).__name__}"
        try:
            handler = self.mangum.infer(event, context)
        except Exception:
            return (
                "it has none of the shapes of API Gateway (REST: resource, httpMethod, path, requestContext; HTTP "
                "API: version, requestContext.http), ALB or function URL events"
            )
        try:
            scope = handler.scope
        except (KeyError, TypeError) as exc:
            return f"a required field is missing or mistyped ({type(exc).__name__}: {str(exc)[:80]})"
        except Exception as exc:
            return f"its request line or headers cannot be read ({type(exc).__name__}: {str(exc)[:80]})"
        method, path = scope.get("method"), scope.get("path")
        if not isinstance(method, str) or not method or not set(method) <= _TOKEN:
            return f"the HTTP method {str(method)[:20]!r} is not a method name"
        if not isinstance(path, str) or not path.startswith("/"):
            return f"the path {str(path)[:40]!r} does not start with '/'"
        try:
            _ = handler.body
        except Exception as exc:
            detail = "invalid base64 under isBase64Encoded" if event.get("isBase64Encoded") else type(exc).__name__
            return f"the body cannot be read: {detail}"
        return None


def _error_response(event: Any, context: Any, status: int, code: str, message: str) -> dict[str, Any]:
    """A proxy response every HTTP event source accepts (API Gateway v1/v2, function URL, ALB)."""
    path = _path_of(event)
    protocol = protocol_for_scope({"type": "http", "method": "POST", "path": path, "headers": []})
    body = error_json(protocol.render(status, code, message, None)).decode("utf-8")
    headers = {"content-type": "application/json", "x-request-id": str(getattr(context, "aws_request_id", ""))}
    response: dict[str, Any] = {"statusCode": status, "body": body, "isBase64Encoded": False}
    if isinstance(event, dict) and isinstance(event.get("multiValueHeaders"), dict):
        response["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    else:
        response["headers"] = headers
    return response


def _path_of(event: Any) -> str:
    if not isinstance(event, dict):
        return "/"
    http = event.get("requestContext", {}).get("http") if isinstance(event.get("requestContext"), dict) else None
    path = event.get("path") or event.get("rawPath") or (http.get("path") if isinstance(http, dict) else None)
    return path if isinstance(path, str) and path.startswith("/") else "/"
