"""The artifact contract shared by model_build (writes it) and the runtime (reads it).

An artifact is a directory: ``model.onnx``, ``tokenizer.json`` (or other preprocessing files) and
``manifest.json`` describing them. Every file is listed with its sha256; the runtime refuses an
artifact whose bytes do not match.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from functions.contract.tasks import Task

MANIFEST_FILE = "manifest.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"  # a model name becomes a URL path segment and a stack name
SCHEMA_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One graph input or output: ONNX name, numpy dtype name, shape with symbolic axes as strings."""

    name: str
    dtype: str
    shape: list[int | str]


class Limits(_Strict):
    """What one request may ask of the model; the runtime enforces these."""

    max_batch: int = Field(32, ge=1, le=4096)
    max_seq_len: int = Field(256, ge=1)
    max_input_chars: int = Field(20_000, ge=1)
    truncate: bool = True


class Quantization(_Strict):
    preset: str
    method: Literal["none", "dynamic", "static", "weight-only", "fp16"]
    weight_type: str
    per_channel: bool = False
    op_types: list[str] = Field(default_factory=list)


class GateResult(_Strict):
    """One quality gate as measured at build time."""

    name: str
    value: float
    threshold: float
    comparison: Literal[">=", "<="]
    passed: bool
    detail: str = ""


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)


class Manifest(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=NAME_PATTERN)
    task: Task
    description: str = ""
    version: str = Field(description="content hash of the artifact's files (first 16 hex of sha256)")
    model_file: str = "model.onnx"
    tokenizer_file: str | None = "tokenizer.json"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    labels: list[str] | None = None
    pooling: Literal["mean", "cls", "none"] = "none"
    normalize: bool = False
    embedding_dim: int | None = None
    limits: Limits = Field(default_factory=lambda: Limits())
    # Task-specific settings the runtime needs (e.g. generation config, image preprocessing, extra graph files).
    config: dict[str, Any] = Field(default_factory=dict)
    quantization: Quantization
    gates: list[GateResult] = Field(default_factory=list)
    files: dict[str, FileEntry]
    metrics: dict[str, float] = Field(default_factory=dict)
    tool_versions: dict[str, str] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @field_validator("files")
    @classmethod
    def _plain_names(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            if not name or "/" in name or "\\" in name or name.startswith(".") or name == MANIFEST_FILE:
                raise ValueError(f"artifact file name {name!r} must be a plain file name in the artifact dir")
        return files

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_FILE
        path.write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        return cls.model_validate(json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8")))


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def content_version(files: dict[str, FileEntry]) -> str:
    """A version id derived from the files' hashes: the same bytes always give the same version."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name].sha256}\n".encode())
    return digest.hexdigest()[:16]
