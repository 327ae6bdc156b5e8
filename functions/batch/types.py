"""Shapes written by the event paths: output lines, job summaries, SQS requests and replies."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

JobStatus = Literal["completed", "rejected", "superseded"]


class ErrorBody(TypedDict):
    code: str
    message: str


class ResultLine(TypedDict):
    id: str | int
    output: Any
    truncated: NotRequired[bool]


class ErrorLine(TypedDict):
    id: str | int | None
    line: int
    error: ErrorBody


class ObjectInfo(TypedDict):
    bucket: str
    key: str
    etag: str
    version_id: str | None
    sequencer: str
    size: int


class JobCounts(TypedDict):
    total: int
    succeeded: int
    failed: int


class JobSummary(TypedDict):
    status: JobStatus
    model: str
    model_version: str | None
    input: ObjectInfo
    output: dict[str, str] | None
    counts: JobCounts
    errors_by_code: dict[str, int]
    input_tokens: int
    predict_calls: int
    started_at: str
    duration_s: float
    error: ErrorBody | None


class InferenceRequest(BaseModel):
    """An SQS message body. ``inputs`` is a list of the task's inputs (one bare input is accepted)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$",
                    description="caller's id; also the result object's name for s3:// replies")
    model: str
    inputs: list[Any]
    parameters: dict[str, Any] | None = None
    reply_to: str

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return value if isinstance(value, list) else [value]


class InferenceReply(TypedDict):
    id: str
    model: str
    model_version: str
    outputs: list[Any]
    truncated: list[bool]
    message_id: str
