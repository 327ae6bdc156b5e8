"""Open Inference Protocol v2 shapes (KServe / Triton)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


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
