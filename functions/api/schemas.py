"""Request/response schemas, named by role, for the three protocols."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- task API ---------------------------------------------------------------------------------
class ImageInput(_Request):
    """One image for an image model: the file's bytes, base64-encoded."""

    image: str = Field(description="base64 of a JPEG, PNG or WebP file (a data: URL is accepted)")


class PredictRequest(_Request):
    inputs: str | ImageInput | list[str | ImageInput] = Field(
        description="one input or a list of inputs (a batch); image models take base64 strings or {image: base64}"
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="task-specific options")


class Usage(BaseModel):
    input_tokens: int


class PredictResponse(BaseModel):
    model: str
    version: str
    task: str
    outputs: list[Any] = Field(description="one output per input, in input order")
    usage: Usage
    truncated: list[bool] = Field(description="per input: was it cut to the model's max_seq_len")


class GateSummary(BaseModel):
    name: str
    value: float
    threshold: float
    comparison: str
    passed: bool


class ModelInfo(BaseModel):
    name: str
    version: str
    task: str
    description: str
    labels: list[str] | None
    embedding_dim: int | None
    limits: dict[str, Any]
    quantization: dict[str, Any]
    gates: list[GateSummary]


class ModelList(BaseModel):
    models: list[ModelInfo]


# --- OpenAI-compatible -------------------------------------------------------------------------
class EmbeddingRequest(_Request):
    model_config = ConfigDict(extra="allow")  # the OpenAI SDK may send fields we ignore

    input: str | list[str] | list[int] | list[list[int]]
    model: str
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class OpenAIModel(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "maas"


class OpenAIModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIModel]


# --- Open Inference Protocol v2 ----------------------------------------------------------------
class OipTensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = "onnxruntime_onnx"
    inputs: list[OipTensorMetadata]
    outputs: list[OipTensorMetadata]


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipRequestInput(BaseModel):
    name: str
    shape: list[int] = Field(description="tensor shape; its product must equal the element count")
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class OipRequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class OipInferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[OipRequestInput] = Field(min_length=1)
    outputs: list[OipRequestOutput] | None = None


class OipResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class OipInferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OipResponseOutput]


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelJSONResponse(Response):
    """A response model serialized by pydantic-core in one call (FastAPI's default path re-encodes it
    through ``jsonable_encoder``, ~0.4 ms for one 384-d embedding). Routes keep ``response_model=`` for the
    OpenAPI document; the body is the same JSON."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.model_dump_json(by_alias=True).encode()
        return bytes(super().render(content))
