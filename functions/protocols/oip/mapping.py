"""Open Inference Protocol tensors ↔ a pipeline, by its capabilities: the tensors a model declares, and an
inference request's tensors through prepare → execute (→ finish for text outputs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from functions.errors import InvalidInputError, MaasError
from functions.inference.pipelines import Capability, Pipeline, Prepared
from functions.inference.postprocess import best_label_tensors

TEXT_INPUT = "text"  # BYTES: UTF-8 strings
IMAGE_INPUT = "image"  # BYTES: encoded JPEG/PNG/WebP files (or their base64 text)
TEXT_OUTPUT = "text_output"  # generated text
TRANSLATION_OUTPUT = "translation"


@dataclass(frozen=True)
class TensorMeta:
    """A tensor as the Open Inference Protocol describes it."""

    name: str
    datatype: str
    shape: list[int]


def input_tensors(pipeline: Pipeline[Any]) -> list[TensorMeta]:
    """The inputs a model takes; an image model's two are alternatives (encoded images, or pixels)."""
    if pipeline.has(Capability.IMAGE_INPUT):
        size = pipeline.preprocessing.size  # type: ignore[attr-defined]
        pixels = pipeline.pixel_input  # type: ignore[attr-defined]
        return [TensorMeta(IMAGE_INPUT, "BYTES", [-1]), TensorMeta(pixels, "FP32", [-1, 3, size, size])]
    return [TensorMeta(TEXT_INPUT, "BYTES", [-1])]


def output_tensors(pipeline: Pipeline[Any]) -> list[TensorMeta]:
    if pipeline.has(Capability.EMBED):
        return [TensorMeta("embeddings", "FP32", [-1, pipeline.manifest.embedding_dim or -1])]
    if pipeline.has(Capability.CLASSIFY):
        labels = pipeline.manifest.labels or []
        return [
            TensorMeta("label", "BYTES", [-1]),
            TensorMeta("score", "FP32", [-1]),
            TensorMeta("probabilities", "FP32", [-1, len(labels)]),
        ]
    if pipeline.has(Capability.TRANSLATE):
        return [TensorMeta(TRANSLATION_OUTPUT, "BYTES", [-1])]
    return [TensorMeta(TEXT_OUTPUT, "BYTES", [-1])]


def check_inputs(pipeline: Pipeline[Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Exactly the declared inputs (an image model's: exactly one of its two), each within ``max_batch``."""
    tensors = input_tensors(pipeline)
    declared = {t.name for t in tensors}
    missing, unknown = declared - arrays.keys(), arrays.keys() - declared
    if pipeline.has(Capability.IMAGE_INPUT) and not unknown:  # its inputs are alternatives
        if len(arrays) != 1:
            image, pixels = tensors
            raise InvalidInputError(
                f"send exactly one of {image.name!r} (BYTES: encoded images) or {pixels.name!r} "
                f"(FP32 {pixels.shape}: preprocessed pixels)".replace("-1", "N")
            )
        missing = set()
    if missing or unknown:
        raise InvalidInputError(
            f"model {pipeline.name} takes inputs {sorted(declared)}; "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )
    for array in arrays.values():
        pipeline.check_batch(int(array.shape[0]) if array.ndim else 1)


def infer(
    pipeline: Pipeline[Any], arrays: Mapping[str, np.ndarray], parameters: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Named tensors in, named tensors out."""
    check_inputs(pipeline, arrays)
    prepared = _prepare(pipeline, arrays, parameters)
    outputs = pipeline.execute(prepared.features, prepared.parameters)
    if pipeline.has(Capability.EMBED):
        return {"embeddings": np.stack(outputs).astype(np.float32)}
    if pipeline.has(Capability.CLASSIFY):
        return best_label_tensors(np.stack(outputs), pipeline.manifest.labels or [])
    result = pipeline.finish(outputs, prepared)
    name = TRANSLATION_OUTPUT if pipeline.has(Capability.TRANSLATE) else TEXT_OUTPUT
    texts = [o if isinstance(o, str) else o["generated_text"] for o in result.outputs]
    return {name: np.array([text.encode() for text in texts], dtype=object)}


def _prepare(pipeline: Pipeline[Any], arrays: Mapping[str, np.ndarray], parameters: Mapping[str, Any]) -> Prepared[Any]:
    """The request's tensors prepared; as with every input, anything that goes wrong reading them is a 4xx."""
    try:
        return _prepare_tensors(pipeline, arrays, parameters)
    except MaasError:
        raise
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"the input tensors could not be read: {detail}") from None


def _prepare_tensors(
    pipeline: Pipeline[Any], arrays: Mapping[str, np.ndarray], parameters: Mapping[str, Any]
) -> Prepared[Any]:
    if not pipeline.has(Capability.IMAGE_INPUT):
        return pipeline.prepare(texts_from_tensor(arrays[TEXT_INPUT]), parameters)
    if parameters:  # OIP returns fixed tensors (label, score, probabilities): there is nothing to choose
        where = next(iter(parameters))
        raise InvalidInputError(f"parameters.{where}: not an option of this model", param=where)
    if IMAGE_INPUT in arrays:
        return pipeline.prepare(list(np.asarray(arrays[IMAGE_INPUT], dtype=object).reshape(-1)))
    return pipeline.prepare_pixels(next(iter(arrays.values())))  # type: ignore[attr-defined,no-any-return]


def texts_from_tensor(tensor: np.ndarray, name: str = TEXT_INPUT) -> list[str]:
    """Decode an OIP BYTES tensor (any shape) into a flat list of UTF-8 strings."""
    texts: list[str] = []
    for index, item in enumerate(np.asarray(tensor, dtype=object).reshape(-1)):
        if isinstance(item, bytes | bytearray):
            try:
                texts.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"input {name!r} element {index} holds bytes that are not UTF-8", param=name
                ) from exc
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidInputError(f"input {name!r} must hold strings (BYTES), got {type(item).__name__}")
    return texts
