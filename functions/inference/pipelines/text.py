"""Encoder pipelines over text: sentence embeddings and text classification."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from functions.contract import Manifest, Task
from functions.errors import InvalidInputError
from functions.inference.pipelines.base import Pipeline, TaskParameters, TaskResult, TensorMeta, classifier_outputs
from functions.inference.postprocess import POOLERS, best_label_tensors, l2_normalize, ranked_labels, softmax
from functions.inference.tokenizer import EncodedBatch, TextEncoder

TEXT_INPUT = "text"


class TextParameters(TaskParameters):
    truncate: bool | None = Field(
        None, description="cut inputs longer than the model's max_seq_len (default: the model's policy)"
    )


class EmbeddingParameters(TextParameters):
    normalize: bool | None = Field(None, description="L2-normalise vectors (default: as the model was trained)")


class ClassificationParameters(TextParameters):
    top_k: int = Field(1, ge=1, description="how many labels to return per input, best first")


def texts_from_tensor(tensor: np.ndarray, name: str = TEXT_INPUT) -> list[str]:
    """Decode an OIP BYTES tensor (any shape) into a flat list of UTF-8 strings."""
    texts: list[str] = []
    for item in np.asarray(tensor, dtype=object).reshape(-1):
        if isinstance(item, bytes | bytearray):
            try:
                texts.append(bytes(item).decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"input {name!r} holds bytes that are not UTF-8", param=name) from exc
        elif isinstance(item, str):
            texts.append(item)
        else:
            raise InvalidInputError(f"input {name!r} must hold strings (BYTES), got {type(item).__name__}")
    return texts


class TextPipeline(Pipeline):
    """Shared tokenization for encoder models."""

    def __init__(self, directory: Path, manifest: Manifest, **kwargs: Any) -> None:
        super().__init__(directory, manifest, **kwargs)
        if manifest.tokenizer_file is None:
            raise InvalidInputError(f"{manifest.name}: a text model needs a tokenizer file")
        self.encoder = TextEncoder(
            directory / manifest.tokenizer_file,
            max_seq_len=manifest.limits.max_seq_len,
            max_input_chars=manifest.limits.max_input_chars,
        )

    def _texts(self, inputs: list[Any]) -> list[str]:
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidInputError(
                    f"inputs[{index}] must be a string, got {type(item).__name__}", param=f"inputs[{index}]"
                )
        self.check_batch(len(inputs))
        return list(inputs)

    def _encode(self, texts: list[str], truncate: bool | None) -> EncodedBatch:
        return self.encoder.encode(texts, truncate=self.limits.truncate if truncate is None else truncate)

    def oip_inputs(self) -> list[TensorMeta]:
        return [TensorMeta(TEXT_INPUT, "BYTES", [-1])]

    def warmup(self) -> None:
        self.predict(["warm up the session"])


class EmbeddingPipeline(TextPipeline):
    task = Task.SENTENCE_EMBEDDINGS
    parameters_model = EmbeddingParameters

    def embed(
        self, texts: list[str], *, truncate: bool | None = None, normalize: bool | None = None
    ) -> tuple[np.ndarray, EncodedBatch]:
        batch = self._encode(self._texts(texts), truncate)
        (hidden, *_) = self.run(batch.feeds())
        if hidden.ndim == 3:
            vectors = POOLERS[self.manifest.pooling](hidden, batch.attention_mask)
        else:  # the graph already pools
            vectors = hidden.astype(np.float32)
        if self.manifest.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        return vectors, batch

    def predict(self, inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        params: EmbeddingParameters = self.parse_parameters(parameters)
        vectors, batch = self.embed(inputs, truncate=params.truncate, normalize=params.normalize)
        return TaskResult(vectors.tolist(), sum(batch.token_counts), batch.truncated, list(batch.token_counts))

    def oip_outputs(self) -> list[TensorMeta]:
        return [TensorMeta("embeddings", "FP32", [-1, self.manifest.embedding_dim or -1])]

    def infer_tensors(
        self, tensors: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        params: EmbeddingParameters = self.parse_parameters(parameters)
        vectors, _ = self.embed(
            texts_from_tensor(tensors[TEXT_INPUT]), truncate=params.truncate, normalize=params.normalize
        )
        return {"embeddings": vectors}


class ClassificationPipeline(TextPipeline):
    task = Task.TEXT_CLASSIFICATION
    parameters_model = ClassificationParameters

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels or []

    def probabilities(self, texts: list[str], *, truncate: bool | None = None) -> tuple[np.ndarray, EncodedBatch]:
        batch = self._encode(self._texts(texts), truncate)
        (logits, *_) = self.run(batch.feeds())
        return softmax(logits.astype(np.float32)), batch

    def predict(self, inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        params: ClassificationParameters = self.parse_parameters(parameters)
        probs, batch = self.probabilities(inputs, truncate=params.truncate)
        outputs = ranked_labels(probs, self.labels, params.top_k)
        return TaskResult(outputs, sum(batch.token_counts), batch.truncated, list(batch.token_counts))

    def oip_outputs(self) -> list[TensorMeta]:
        return classifier_outputs(self.labels)

    def infer_tensors(
        self, tensors: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        params: ClassificationParameters = self.parse_parameters(parameters)
        probs, _ = self.probabilities(texts_from_tensor(tensors[TEXT_INPUT]), truncate=params.truncate)
        return best_label_tensors(probs, self.labels)
