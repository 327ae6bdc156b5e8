"""Errors rendered in each protocol's own shape; no stack traces or internal paths ever leave."""

from __future__ import annotations

import json
import re
from typing import Any

from aws_lambda_powertools import Logger
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from functions.errors import MaasError

logger = Logger(service="maas")


def error_body(path: str, status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    if path.startswith("/v1/"):
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if path.startswith("/v2"):
        return {"error": message}
    return {"error": {"code": code, "message": message, "param": param}}


def error_response(request: Request, status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
    headers = {"x-request-id": request.state.request_id} if hasattr(request.state, "request_id") else None
    return JSONResponse(error_body(request.url.path, status, code, message, param), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


# The error bodies as OpenAPI documents them (FastAPI's default 422 schema is not what these routes send).
_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "TaskApiError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                },
            }
        },
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "OipError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
}
_ERROR_STATUSES = {
    400: "Malformed request body (e.g. invalid gzip)",
    401: "Missing or invalid x-api-key",
    404: "Unknown model or route",
    413: "Request body, batch or input over the model's limits",
    415: "Unsupported Content-Encoding",
    422: "Invalid request",
    429: "Too many requests in flight; retry after Retry-After seconds",
    500: "Internal error (the message quotes the request id)",
    503: "Server busy, or the model is not ready",
}


def _error_schema(path: str) -> str:
    if path.startswith("/v1/"):
        return "OpenAIError"
    return "OipError" if path.startswith("/v2") else "TaskApiError"


def document_errors(openapi: dict[str, Any]) -> dict[str, Any]:
    """Document every error status with the body its protocol really sends; resolve dangling schema refs."""
    from functions.api import schemas

    components = openapi.setdefault("components", {}).setdefault("schemas", {})
    components.update(_ERROR_SCHEMAS)
    for path, item in openapi.get("paths", {}).items():
        if path.startswith("/v2/health"):  # readiness answers 503 with its own body
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            ref = {"$ref": f"#/components/schemas/{_error_schema(path)}"}
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
            model = getattr(schemas, name, None)
            if model is None:
                components[name] = {}
                continue
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[name] = schema
    return openapi


def install_error_handlers(app: FastAPI) -> None:
    default_openapi = app.openapi
    documented = False

    def openapi() -> dict[str, Any]:
        nonlocal documented
        schema = default_openapi()
        if not documented:
            document_errors(schema)
            documented = True
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(MaasError)
    async def maas_error(request: Request, exc: MaasError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("request failed", extra={"code": exc.code, "error": exc.message})
        return error_response(request, exc.status_code, exc.code, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        where = _location(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            message = "request body is not valid JSON"
        else:
            message = f"{where}: {first.get('msg', 'invalid value')}"
            if len(errors) > 1:
                message += f" (and {len(errors) - 1} more problem(s))"
        return error_response(request, 422, "invalid_request", message, where)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's wording
            code, message = "invalid_body", "request body could not be read: send UTF-8 JSON"
        response = error_response(request, exc.status_code, code, message)
        response.headers.update(exc.headers or {})  # e.g. Allow on 405 (RFC 9110)
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        rid = getattr(request.state, "request_id", "unknown")
        return error_response(request, 500, "internal_error", f"internal error; quote request id {rid}")
