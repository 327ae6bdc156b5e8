"""Task API request/response shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
