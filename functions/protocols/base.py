"""What every protocol folder builds on: its error shape, installed on its own routes, and the shared dependencies.

A protocol (task API, Open Inference Protocol, OpenAI) is a :class:`Protocol`: a name, the JSON body of an
error in its own shape, and the JSON schema of that body for the OpenAPI document. Its router is built
with :func:`protocol_router`, whose route class renders every error raised in its routes (a
:class:`MaasError`, a validation error, an unexpected exception) in that shape. Errors raised before a
route runs (middleware: API key, admission control, body limits) find their shape through
:func:`protocol_for_scope`, which asks the app's routes which one matches the request — never the URL
prefix. A path no route matches gets the shape of the protocol that declares its prefix, else the task
API's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import Scope

from functions.errors import MaasError, printable
from functions.inference import batching
from functions.inference.batching import MicroBatcher
from functions.inference.pipelines import Capability, Pipeline, TaskResult
from functions.inference.registry import ModelRegistry
from functions.telemetry import RequestMetrics, logger

Render = Callable[[int, str, str, "str | None"], dict[str, Any]]


@dataclass(frozen=True)
class Protocol:
    """One protocol's error shape: how to render an error, and its schema for the OpenAPI document."""

    name: str
    prefix: str  # the paths it owns, for requests that match no route (unknown paths)
    render: Render
    schema_name: str
    schema: dict[str, Any] = field(hash=False)

    def response(self, status: int, code: str, message: str, param: str | None = None) -> JSONResponse:
        return ErrorJSONResponse(self.render(status, code, message, param), status_code=status)


class ErrorJSONResponse(JSONResponse):
    """An error body that always encodes, even when its message quotes text that is not valid Unicode."""

    def render(self, content: Any) -> bytes:
        return error_json(content)


def error_json(content: Any) -> bytes:
    """An error body as UTF-8 JSON; lone surrogates quoted from the caller become U+FFFD."""
    return printable(json.dumps(content, ensure_ascii=False, separators=(",", ":"))).encode("utf-8")


_PROTOCOLS: list[Protocol] = []  # registered by each protocol folder at import; longest prefix first
_ROUTES: list[ProtocolRoute] = []  # every route of every protocol router, whatever app includes it


def register(protocol: Protocol) -> Protocol:
    _PROTOCOLS.append(protocol)
    _PROTOCOLS.sort(key=lambda p: len(p.prefix), reverse=True)
    return protocol


def protocol_routes() -> list[ProtocolRoute]:
    """Every route made by :func:`protocol_router` (with its full path)."""
    return list(_ROUTES)


def protocol_for_scope(scope: Scope) -> Protocol:
    """The protocol of the route that serves this request (or would, with another method)."""
    probe = {**scope, "path": scope.get("path", ""), "root_path": ""}
    for route in _ROUTES:
        match, _ = route.matches(probe)
        if match is not Match.NONE:
            return route.protocol
    path = str(scope.get("path", ""))
    return next((p for p in _PROTOCOLS if p.prefix and path.startswith(p.prefix)), default_protocol())


def default_protocol() -> Protocol:
    return next(p for p in _PROTOCOLS if p.name == "task")


def note_error(scope: Scope, code: str) -> None:
    """Record the error code for the request's metrics (the ``Errors`` metric by code)."""
    metrics = scope.get("state", {}).get("metrics")
    if isinstance(metrics, RequestMetrics):
        metrics.error_code = code


class ProtocolRoute(APIRoute):
    """A route whose errors are rendered in its protocol's shape, whatever raised them."""

    protocol: Protocol

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        protocol = self.protocol

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except MaasError as exc:
                if exc.status_code >= 500:
                    logger.warning("request failed", extra={"code": exc.code, "error": exc.message})
                return _error(request, protocol, exc.status_code, exc.code, exc.message, exc.param)
            except RequestValidationError as exc:
                message, where = validation_message(exc)
                return _error(request, protocol, 422, "invalid_request", message, where)
            except StarletteHTTPException as exc:
                code, message = http_error_text(exc)
                response = _error(request, protocol, exc.status_code, code, message)
                response.headers.update(exc.headers or {})
                return response
            except Exception:
                logger.exception("unhandled error")
                rid = getattr(request.state, "request_id", "unknown")
                return _error(request, protocol, 500, "internal_error", f"internal error; quote request id {rid}")

        return guarded


def _error(
    request: Request, protocol: Protocol, status: int, code: str, message: str, param: str | None = None
) -> JSONResponse:
    note_error(request.scope, code)
    return protocol.response(status, code, message, param)


def protocol_router(protocol: Protocol, **kwargs: Any) -> APIRouter:
    """An APIRouter whose routes render their errors in ``protocol``'s shape."""
    route_class = type(f"{protocol.name.title()}Route", (ProtocolRoute,), {"protocol": protocol})
    return _RegisteringRouter(route_class=route_class, **kwargs)


class _RegisteringRouter(APIRouter):
    """An APIRouter that records each route it makes, so errors raised before routing can find its protocol."""

    def add_api_route(self, *args: Any, **kwargs: Any) -> None:
        super().add_api_route(*args, **kwargs)
        route = self.routes[-1]
        if isinstance(route, ProtocolRoute):
            _ROUTES.append(route)


def validation_message(exc: RequestValidationError) -> tuple[str, str]:
    """FastAPI's validation errors as one message naming the first bad field, and that field."""
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", where
    message = f"{where}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return message, where


def http_error_text(exc: StarletteHTTPException) -> tuple[str, str]:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 400 and message == "There was an error parsing the body":  # FastAPI's wording
        code, message = "invalid_body", "request body could not be read: send UTF-8 JSON"
    return code, message


# --- dependencies and helpers the routers share -----------------------------------------------------------
async def get_registry(request: Request) -> ModelRegistry:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    per request for an attribute read."""
    registry: ModelRegistry = request.app.state.registry
    return registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def run_predict(
    request: Request, pipeline: Pipeline[Any], inputs: list[Any], parameters: Mapping[str, Any] | None
) -> TaskResult:
    """One request's prediction, off the event loop — through the model's micro-batcher when it is on."""
    from starlette.concurrency import run_in_threadpool

    batchers: dict[str, MicroBatcher] | None = getattr(request.app.state, "batchers", None)
    if batchers is None or not pipeline.has(Capability.MERGEABLE):
        result = await run_in_threadpool(batching.predict, pipeline, inputs, parameters)
    else:
        batcher = batchers.get(pipeline.name)
        if batcher is None:
            batcher = batchers[pipeline.name] = MicroBatcher(pipeline, max_wait_ms=request.app.state.microbatch_wait_ms)
        result = await batcher.predict(inputs, parameters)
    record_usage(
        request, pipeline.name, inputs=len(inputs), input_tokens=result.input_tokens, output_tokens=result.output_tokens
    )
    return result


def record_usage(
    request: Request, model: str, *, inputs: int = 0, input_tokens: int = 0, output_tokens: int = 0
) -> None:
    """What the request asked of which model, for its metrics (published when the response is sent)."""
    metrics = getattr(request.state, "metrics", None)
    if isinstance(metrics, RequestMetrics):
        metrics.model = model
        metrics.inputs += inputs
        metrics.input_tokens += input_tokens
        metrics.output_tokens += output_tokens


class ModelJSONResponse(Response):
    """A response model serialized by pydantic-core in one call (FastAPI's default path re-encodes it
    through ``jsonable_encoder``, ~0.4 ms for one 384-d embedding). Routes keep ``response_model=`` for the
    OpenAPI document; the body is the same JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.model_dump_json(by_alias=True).encode()
        return json.dumps(content).encode()
