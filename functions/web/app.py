"""create_app(): the one FastAPI app behind Lambda (Mangum), uvicorn in GPU containers and `maas serve`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from functions.inference.registry import ModelRegistry
from functions.protocols.oip import router as oip
from functions.protocols.openai import completions, embeddings
from functions.protocols.task import router as task
from functions.settings import Settings, get_settings
from functions.telemetry import publish_load
from functions.web.body import RequestBodyMiddleware
from functions.web.deadline import DeadlineMiddleware
from functions.web.middleware import RequestContextMiddleware
from functions.web.openapi import install_error_handlers
from functions.web.security import AdmissionController, AdmissionControlMiddleware, ApiKeyMiddleware

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _load_reports(admission: AdmissionController, interval_s: float) -> Lifespan | None:
    """Under a server (uvicorn runs the lifespan; Mangum on Lambda does not), report every ``interval_s`` the
    requests in flight or waiting for a slot: the EMF metric the GPU service scales on. None when 0."""
    if interval_s <= 0:
        return None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def report() -> None:
            while True:
                publish_load(in_flight=admission.in_flight, waiting=admission.waiting)
                await asyncio.sleep(interval_s)

        task = asyncio.create_task(report(), name="maas:load-reports")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan


def create_app(registry: ModelRegistry, settings: Settings | None = None) -> FastAPI:
    """Build the app around an already-loaded registry (models load once per process, never per request)."""
    settings = settings or get_settings()
    admission = AdmissionController(settings.max_concurrency, settings.max_queue, settings.queue_timeout_s)
    app = FastAPI(
        title="maas",
        version=oip.SERVER_VERSION,
        description="Model-as-a-Service: task API, Open Inference Protocol v2 and OpenAI-compatible routes.",
        lifespan=_load_reports(admission, settings.load_metrics_interval_s),
    )
    app.state.admission = admission
    app.state.registry = registry
    app.state.batchers = {} if settings.microbatch else None  # model name → MicroBatcher, made on first use
    app.state.microbatch_wait_ms = settings.microbatch_wait_ms
    install_error_handlers(app)
    app.include_router(task.router)
    app.include_router(oip.router)
    app.include_router(embeddings.router)
    app.include_router(completions.router)
    # Outermost last: request id → API key → body (on time, capped) → admission → routes. A caller without a
    # key never reads a body; a body is read whole before its request may take a slot, so a slow or idle
    # upload holds a connection, never a slot.
    app.add_middleware(AdmissionControlMiddleware, controller=admission)
    app.add_middleware(
        RequestBodyMiddleware,
        max_bytes=settings.max_request_bytes,
        timeout_s=settings.body_timeout_s,
        max_readers=settings.max_body_readers,
    )
    app.add_middleware(ApiKeyMiddleware, keys=settings.api_key_list())
    app.add_middleware(RequestContextMiddleware)
    # Outermost: the deadline counts from the request's arrival, before its body is read.
    app.add_middleware(DeadlineMiddleware, timeout_s=settings.request_timeout_s)
    return app
