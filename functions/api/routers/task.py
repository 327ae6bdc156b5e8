"""The simple task API: ``POST /models/{model}/predict`` with ``{"inputs": ..., "parameters": {...}}``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from functions.api.deps import RegistryDep
from functions.api.schemas import GateSummary, ModelInfo, ModelList, PredictRequest, PredictResponse, Usage
from functions.inference.pipelines import Pipeline

router = APIRouter(prefix="/models", tags=["task API"])


def model_info(pipeline: Pipeline) -> ModelInfo:
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
async def predict(model: str, request: PredictRequest, registry: RegistryDep) -> PredictResponse:
    pipeline = registry.get(model)
    inputs = [request.inputs] if isinstance(request.inputs, str) else request.inputs
    result = await run_in_threadpool(pipeline.predict, inputs, request.parameters)
    return PredictResponse(
        model=pipeline.name,
        version=pipeline.manifest.version,
        task=pipeline.task.value,
        outputs=result.outputs,
        usage=Usage(input_tokens=result.input_tokens),
        truncated=result.truncated,
    )
