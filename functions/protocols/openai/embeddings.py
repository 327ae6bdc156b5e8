"""OpenAI-compatible routes: ``POST /v1/embeddings`` and ``GET /v1/models``.

Works with the official ``openai`` SDK, which asks for base64 vectors unless told otherwise.
"""

from __future__ import annotations

import base64

import numpy as np
from fastapi import Request, Response

from functions.errors import InvalidInputError, UnsupportedOperationError
from functions.inference.pipelines import Capability
from functions.protocols.base import ModelJSONResponse, RegistryDep, protocol_router, run_predict
from functions.protocols.openai.errors import OPENAI
from functions.protocols.openai.schemas import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    OpenAIModel,
    OpenAIModelList,
)

router = protocol_router(OPENAI, prefix="/v1", tags=["OpenAI-compatible"])


@router.get("/models", response_model=OpenAIModelList, summary="List models")
def list_models(registry: RegistryDep) -> OpenAIModelList:
    return OpenAIModelList(
        data=[OpenAIModel(id=p.name, created=int(p.manifest.created_at.timestamp())) for p in registry.pipelines()]
    )


@router.post("/embeddings", response_model=EmbeddingResponse, summary="Create embeddings")
async def create_embeddings(request: EmbeddingRequest, registry: RegistryDep, http: Request) -> Response:
    pipeline = registry.get(request.model)
    if not pipeline.has(Capability.EMBED):
        raise UnsupportedOperationError(
            f"model {request.model!r} is a {pipeline.task.value} model; /v1/embeddings needs a sentence-embeddings "
            "model (see GET /v1/models)",
            param="model",
        )
    texts = _texts(request.input)
    dim = pipeline.manifest.embedding_dim
    if request.dimensions is not None and request.dimensions != dim:
        raise InvalidInputError(
            f"model {request.model!r} produces {dim}-dimensional embeddings; omit 'dimensions' or set it to {dim}",
            param="dimensions",
        )
    result = await run_predict(http, pipeline, texts, None)  # micro-batched with concurrent callers when on
    data = [
        EmbeddingData(index=i, embedding=_encode(np.asarray(vector, dtype=np.float32), request.encoding_format))
        for i, vector in enumerate(result.outputs)
    ]
    tokens = result.input_tokens
    return ModelJSONResponse(
        EmbeddingResponse(
            data=data, model=pipeline.name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        )
    )


def _texts(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if value and all(isinstance(v, str) for v in value):
        return list(value)  # type: ignore[arg-type]
    if not value:
        raise InvalidInputError("'input' is empty: send a string or a list of strings", param="input")
    raise InvalidInputError(
        "'input' holds token ids; this server tokenizes with the model's own tokenizer, send text instead",
        param="input",
    )


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.tolist()  # type: ignore[no-any-return]
