"""FastAPI dependencies as Annotated aliases, and the one way routes run a pipeline's ``predict``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from functions.contract import Task
from functions.inference.microbatch import MicroBatcher
from functions.inference.pipelines import Pipeline, TaskResult
from functions.inference.registry import ModelRegistry

# Tasks whose outputs are per input and independent of the rest of the batch: safe to merge requests.
MERGEABLE_TASKS = frozenset({Task.SENTENCE_EMBEDDINGS, Task.TEXT_CLASSIFICATION, Task.IMAGE_CLASSIFICATION})


async def get_registry(request: Request) -> ModelRegistry:
    """``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread hop
    per request for an attribute read."""
    registry: ModelRegistry = request.app.state.registry
    return registry


RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]


async def run_predict(
    request: Request, pipeline: Pipeline, inputs: list[Any], parameters: Mapping[str, Any] | None
) -> TaskResult:
    """``pipeline.predict`` off the event loop — through the model's micro-batcher when it is on."""
    batchers: dict[str, MicroBatcher] | None = getattr(request.app.state, "batchers", None)
    if batchers is None or pipeline.task not in MERGEABLE_TASKS:
        return await run_in_threadpool(pipeline.predict, inputs, parameters)
    batcher = batchers.get(pipeline.name)
    if batcher is None:
        batcher = batchers[pipeline.name] = MicroBatcher(
            pipeline, max_wait_ms=request.app.state.microbatch_wait_ms
        )
    return await batcher.predict(inputs, parameters)
