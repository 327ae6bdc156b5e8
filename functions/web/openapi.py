"""The OpenAPI document, and the errors raised outside any route, both in each protocol's own shape.

Every operation documents its error statuses with the body its protocol really sends (the route's
:class:`~functions.protocols.base.Protocol`); an error raised before a route runs (no route matches, wrong
method) is rendered in the shape of the protocol that owns the path (:func:`protocol_for_scope`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from functions.errors import MaasError
from functions.protocols.base import (
    http_error_text,
    note_error,
    protocol_for_scope,
    protocol_routes,
    validation_message,
)
from functions.protocols.oip import schemas as oip_schemas
from functions.protocols.openai import completion_schemas
from functions.protocols.openai import schemas as openai_schemas
from functions.protocols.task import schemas as task_schemas
from functions.telemetry import logger

_ERROR_STATUSES = {
    400: "Malformed request body (e.g. invalid gzip)",
    401: "Missing or invalid API key",
    404: "Unknown model or route",
    408: "The request body was not received in time",
    413: "Request body, batch or input over the model's limits",
    415: "Unsupported Content-Encoding",
    422: "Invalid request",
    429: "Too many requests in flight; retry after Retry-After seconds",
    500: "Internal error (the message quotes the request id)",
    503: "Server busy, or the model is not ready",
}
_SCHEMA_MODULES = (task_schemas, oip_schemas, openai_schemas, completion_schemas)


def document_errors(app: FastAPI, openapi: dict[str, Any]) -> dict[str, Any]:
    """Document every error status with the body its route's protocol sends; resolve dangling schema refs."""
    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    protocols = {
        (route.path_format, method.lower()): route.protocol
        for route in protocol_routes()
        for method in route.methods or ()
    }
    for path, item in openapi.get("paths", {}).items():
        if path.startswith("/v2/health"):  # readiness answers 503 with its own body
            continue
        for method, operation in item.items():
            protocol = protocols.get((path, method))
            if protocol is None:
                continue
            components[protocol.schema_name] = protocol.schema
            responses = operation.setdefault("responses", {})
            ref = {"$ref": f"#/components/schemas/{protocol.schema_name}"}
            for status, description in _ERROR_STATUSES.items():
                if str(status) == "422" or str(status) not in responses:
                    responses[str(status)] = {
                        "description": description,
                        "content": {"application/json": {"schema": ref}},
                    }
    for unused in ("HTTPValidationError", "ValidationError"):  # in this order: the first refers to the second
        if f"#/components/schemas/{unused}" not in json.dumps(openapi):
            components.pop(unused, None)
    while missing := {
        name
        for name in re.findall(r'"#/components/schemas/([A-Za-z0-9_]+)"', json.dumps(openapi))
        if name not in components
    }:
        for name in missing:  # a request schema given inline (openapi_extra) whose nested models were left out
            model = next((getattr(m, name) for m in _SCHEMA_MODULES if hasattr(m, name)), None)
            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                components[name] = {}
                continue
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
    return openapi


def install_error_handlers(app: FastAPI) -> None:
    """Errors that no route's own handler caught (no route matched, wrong method), in the path's protocol."""
    default_openapi = app.openapi
    documented = False

    def openapi() -> dict[str, Any]:
        nonlocal documented
        schema = default_openapi()
        if not documented:
            document_errors(app, schema)
            documented = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    def render(request: Request, status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
        note_error(request.scope, code)
        return protocol_for_scope(request.scope).response(status, code, message, param)

    @app.exception_handler(MaasError)
    async def maas_error(request: Request, exc: MaasError) -> JSONResponse:
        return render(request, exc.status_code, exc.code, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, where = validation_message(exc)
        return render(request, 422, "invalid_request", message, where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, message = http_error_text(exc)
        response = render(request, exc.status_code, code, message)
        response.headers.update(exc.headers or {})  # e.g. Allow on 405 (RFC 9110)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        rid = getattr(request.state, "request_id", "unknown")
        return render(request, 500, "internal_error", f"internal error; quote request id {rid}")
