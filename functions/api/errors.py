"""Errors rendered in each protocol's own shape; no stack traces or internal paths ever leave."""

from __future__ import annotations

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


def install_error_handlers(app: FastAPI) -> None:
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
        return error_response(request, exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        rid = getattr(request.state, "request_id", "unknown")
        return error_response(request, 500, "internal_error", f"internal error; quote request id {rid}")
