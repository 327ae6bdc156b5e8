"""Assemble an artifact directory: model.onnx, tokenizer.json and a manifest with every file's sha256."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path
from typing import Any

import onnx

from functions.contract import (
    FileEntry,
    GateResult,
    Manifest,
    Quantization,
    TensorSpec,
    content_version,
    sha256_file,
)
from model_build.catalog import CatalogEntry

_TOOLS = ("torch", "transformers", "onnx", "onnxscript", "onnxruntime", "tokenizers", "maas")
_ONNX_DTYPES = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 3: "int8", 2: "uint8", 9: "bool", 8: "string"}


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in _TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def graph_io(model_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    graph = onnx.load(str(model_path), load_external_data=False).graph

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        shape: list[int | str] = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return TensorSpec(name=value.name, dtype=_ONNX_DTYPES.get(tensor.elem_type, str(tensor.elem_type)), shape=shape)

    return [spec(v) for v in graph.input], [spec(v) for v in graph.output]


def write_artifact(
    directory: Path,
    *,
    entry: CatalogEntry,
    files: dict[str, Path],
    quantization: Quantization,
    fields: dict[str, Any] | None = None,
    gates: list[GateResult] | None = None,
    metrics: dict[str, float] | None = None,
) -> Manifest:
    """Copy ``files`` (artifact name → source path) into ``directory`` (replacing it) and write a manifest.

    ``fields`` carries task-specific manifest fields (labels, pooling, config, ...). The first ``.onnx``
    file named ``model.onnx`` describes the graph I/O.
    """
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for name, path in files.items():
        shutil.copyfile(path, directory / name)
    entries = {
        name: FileEntry(sha256=sha256_file(directory / name), size_bytes=(directory / name).stat().st_size)
        for name in files
    }
    inputs, outputs = graph_io(directory / "model.onnx")
    fields = dict(fields or {})
    if "tokenizer.json" not in files:
        fields.setdefault("tokenizer_file", None)
    manifest = Manifest(
        name=entry.name,
        task=entry.task,
        description=entry.description,
        version=content_version(entries),
        inputs=inputs,
        outputs=outputs,
        limits=entry.limits,
        quantization=quantization,
        gates=gates or [],
        files=entries,
        metrics=metrics or {},
        tool_versions=tool_versions(),
        **fields,
    )
    manifest.write(directory)
    return manifest
