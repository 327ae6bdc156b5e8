"""The simple task API: ``POST /models/{model}/predict`` with ``{"inputs": ..., "parameters": {...}}``.

Image models also take one image as the raw body of ``POST /models/{model}/predict/image``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from functions.errors import InvalidInputError, UnsupportedMediaTypeError, UnsupportedOperationError
from functions.inference.pipelines import Capability, Pipeline, TaskResult
from functions.protocols.base import ModelJSONResponse, RegistryDep, protocol_router, run_predict
from functions.protocols.task.errors import TASK_API
from functions.protocols.task.schemas import (
    GateSummary,
    ImageInput,
    ModelInfo,
    ModelList,
    PredictRequest,
    PredictResponse,
    Usage,
)

router = protocol_router(TASK_API, prefix="/models", tags=["task API"])
RAW_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "application/octet-stream")
_RAW_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in RAW_IMAGE_TYPES},
    }
}


def model_info(pipeline: Pipeline[Any]) -> ModelInfo:
    m = pipeline.manifest
    return ModelInfo(
        name=m.name,
        version=m.version,
        task=m.task.value,
        description=m.description,
        labels=m.labels,
        embedding_dim=m.embedding_dim,
        limits=m.limits.model_dump(),
        quantization=m.quantization.model_dump(),
        gates=[GateSummary(**g.model_dump(exclude={"detail"})) for g in m.gates],
    )


@router.get("", response_model=ModelList, summary="List served models")
def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(models=[model_info(p) for p in registry.pipelines()])


@router.get("/{model}", response_model=ModelInfo, summary="Describe one model: task, limits, labels, gates")
def describe_model(model: str, registry: RegistryDep) -> ModelInfo:
    return model_info(registry.get(model))


@router.post("/{model}/predict", response_model=PredictResponse, summary="Run the model's task")
async def predict(model: str, request: PredictRequest, registry: RegistryDep, http: Request) -> Response:
    pipeline = registry.get(model)
    items = request.inputs if isinstance(request.inputs, list) else [request.inputs]
    inputs: list[Any] = [item.model_dump() if isinstance(item, ImageInput) else item for item in items]
    result = await run_predict(http, pipeline, inputs, request.parameters)
    return ModelJSONResponse(_response(pipeline, result))


@router.post(
    "/{model}/predict/image",
    response_model=PredictResponse,
    summary="Classify one image sent as the raw body (Content-Type image/jpeg, image/png or image/webp)",
    description="Task parameters go in the query string, e.g. `?top_k=3`.",
    openapi_extra=_RAW_IMAGE_BODY,
)
async def predict_image(model: str, request: Request, registry: RegistryDep) -> PredictResponse:
    pipeline = registry.get(model)
    if not pipeline.has(Capability.IMAGE_INPUT):
        raise UnsupportedOperationError(
            f"model {model!r} is a {pipeline.task.value} model; /predict/image needs an image model", param="model"
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in RAW_IMAGE_TYPES:
        raise UnsupportedMediaTypeError(
            f"send the image file as the body with Content-Type {', '.join(RAW_IMAGE_TYPES)} (got {media or 'none'}); "
            f"JSON with base64 images goes to /models/{model}/predict",
            param="content-type",
        )
    body = await request.body()
    if not body:
        raise InvalidInputError("the request body is empty: send the image file's bytes", param="body")
    result = await run_predict(request, pipeline, [body], dict(request.query_params))
    return _response(pipeline, result)


def _response(pipeline: Pipeline[Any], result: TaskResult) -> PredictResponse:
    return PredictResponse(
        model=pipeline.name,
        version=pipeline.manifest.version,
        task=pipeline.task.value,
        outputs=result.outputs,
        usage=Usage(input_tokens=result.input_tokens),
        truncated=result.truncated,
    )
