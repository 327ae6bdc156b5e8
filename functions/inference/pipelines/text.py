"""Encoder pipelines over text: sentence embeddings and text classification."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
from pydantic import Field

from functions.contract import Manifest, Task
from functions.errors import ArtifactError, InvalidInputError
from functions.inference.pipelines.base import Capability, Pipeline, Prepared, TaskParameters, TaskResult
from functions.inference.postprocess import POOLERS, l2_normalize, ranked_labels, softmax
from functions.inference.tokenizer import EncodedBatch, TextEncoder, TokenizedText


class TextParameters(TaskParameters):
    truncate: bool | None = Field(
        None, description="cut inputs longer than the model's max_seq_len (default: the model's policy)"
    )


class EmbeddingParameters(TextParameters):
    normalize: bool | None = Field(None, description="L2-normalise vectors (default: as the model was trained)")


class ClassificationParameters(TextParameters):
    top_k: int = Field(1, ge=1, description="how many labels to return per input, best first")


TP = TypeVar("TP", bound=TextParameters)

# A run's fixed cost in padded tokens: MiniLM INT8 on 2 vCPUs spends ~1.3 ms per run beyond its tokens
# (~0.05 ms each). Inputs of one request (or of merged requests) are split into runs of similar length when
# the padding that saves outweighs this; equal lengths always stay one run.
RUN_COST_TOKENS = 32


def length_groups(lengths: Sequence[int], run_cost: int = RUN_COST_TOKENS) -> list[list[int]]:
    """Indices into ``lengths`` split into runs that minimise padded tokens plus ``run_cost`` per run.

    Sorted by length, the best split is contiguous, so an exact dynamic programme over the sorted order
    finds it in O(n²) (n ≤ the model's max_batch). Runs come back shortest first, each sorted by length."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = [0] + [0] * len(order)  # best[j]: cost of the first j sorted inputs
    cut = [0] * (len(order) + 1)  # cut[j]: where the last run of that best split starts
    for j in range(1, len(order) + 1):
        longest = lengths[order[j - 1]]
        best[j], cut[j] = min((best[i] + run_cost + (j - i) * longest, i) for i in range(j))
    groups: list[list[int]] = []
    end = len(order)
    while end:
        groups.append(order[cut[end] : end])
        end = cut[end]
    return groups[::-1]


def as_text(index: int, item: Any) -> str:
    if not isinstance(item, str):
        raise InvalidInputError(
            f"inputs[{index}] must be a string, got {type(item).__name__}", param=f"inputs[{index}]"
        )
    return item


class TextPipeline(Pipeline[TP], Generic[TP]):
    """Shared tokenization for encoder models: a feature is one input's unpadded tokens."""

    def __init__(self, directory: Path, manifest: Manifest, **kwargs: Any) -> None:
        super().__init__(directory, manifest, **kwargs)
        if manifest.tokenizer_file is None:
            raise ArtifactError(f"{manifest.name}: a text model needs a tokenizer file")
        self.encoder = TextEncoder(
            directory / manifest.tokenizer_file,
            max_seq_len=manifest.limits.max_seq_len,
            max_input_chars=manifest.limits.max_input_chars,
        )

    def texts(self, inputs: Sequence[Any]) -> list[str]:
        """Inputs checked to be strings, within the batch limit."""
        self.check_batch(len(inputs))
        return [as_text(index, item) for index, item in enumerate(inputs)]

    def prepare(self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None) -> Prepared[TP]:
        params = self.parse_parameters(parameters)
        texts = self.texts(inputs)
        truncate = self.limits.truncate if params.truncate is None else params.truncate
        tokens = self.encoder.tokenize(texts, truncate=truncate)
        return Prepared(tokens, params, [t.length for t in tokens], [t.truncated for t in tokens])

    def encoded(self, features: Sequence[TokenizedText]) -> tuple[np.ndarray, EncodedBatch]:
        """One ORT run over the features, padded together; the first graph output and the batch."""
        batch = self.encoder.collate(features)
        (first, *_) = self.run(batch.feeds())
        return first, batch

    def per_input(
        self, features: Sequence[TokenizedText], rows: Callable[[np.ndarray, EncodedBatch], np.ndarray]
    ) -> list[np.ndarray]:
        """One output row per feature, in order: runs of similar length (``length_groups``), each turned into
        rows by ``rows(first graph output, batch)``."""
        out: list[np.ndarray] = [np.empty(0)] * len(features)
        for group in length_groups([f.length for f in features]):
            first, batch = self.encoded([features[i] for i in group])
            for index, row in zip(group, rows(first, batch), strict=True):
                out[index] = row
        return out

    def warmup(self) -> None:
        self.predict(["warm up the session"])


class EmbeddingPipeline(TextPipeline[EmbeddingParameters]):
    task = Task.SENTENCE_EMBEDDINGS
    capabilities = frozenset({Capability.TEXT_INPUT, Capability.EMBED, Capability.MERGEABLE})
    parameters_model = EmbeddingParameters

    def execute(self, features: Sequence[TokenizedText], parameters: EmbeddingParameters) -> list[np.ndarray]:
        normalize = self.manifest.normalize if parameters.normalize is None else parameters.normalize

        def vectors(hidden: np.ndarray, batch: EncodedBatch) -> np.ndarray:
            if hidden.ndim == 3:
                pooled = POOLERS[self.manifest.pooling](hidden, batch.attention_mask)
            else:  # the graph already pools
                pooled = hidden.astype(np.float32)
            return l2_normalize(pooled) if normalize else pooled

        return self.per_input(features, vectors)

    def finish(self, outputs: list[np.ndarray], prepared: Prepared[EmbeddingParameters]) -> TaskResult:
        return TaskResult(
            [vector.tolist() for vector in outputs],
            sum(prepared.token_counts),
            prepared.truncated,
            prepared.token_counts,
        )

    def embed(
        self, texts: list[str], *, truncate: bool | None = None, normalize: bool | None = None
    ) -> tuple[np.ndarray, Prepared[EmbeddingParameters]]:
        """Vectors ``[n, dim]`` for texts, as one run (the build's gates and the benchmarks use it)."""
        prepared = self.prepare(texts, {"truncate": truncate, "normalize": normalize})
        return np.stack(self.execute(prepared.features, prepared.parameters)), prepared


class ClassificationPipeline(TextPipeline[ClassificationParameters]):
    task = Task.TEXT_CLASSIFICATION
    capabilities = frozenset({Capability.TEXT_INPUT, Capability.CLASSIFY, Capability.MERGEABLE})
    parameters_model = ClassificationParameters

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels or []

    def execute(self, features: Sequence[TokenizedText], parameters: ClassificationParameters) -> list[np.ndarray]:
        return self.per_input(features, lambda logits, _: softmax(logits.astype(np.float32)))

    def finish(self, outputs: list[np.ndarray], prepared: Prepared[ClassificationParameters]) -> TaskResult:
        ranked = ranked_labels(np.stack(outputs), self.labels, prepared.parameters.top_k)
        return TaskResult(ranked, sum(prepared.token_counts), prepared.truncated, prepared.token_counts)

    def probabilities(
        self, texts: list[str], *, truncate: bool | None = None
    ) -> tuple[np.ndarray, Prepared[ClassificationParameters]]:
        """Class probabilities ``[n, classes]`` for texts, as one run (the build's gates use it)."""
        prepared = self.prepare(texts, {"truncate": truncate})
        return np.stack(self.execute(prepared.features, prepared.parameters)), prepared
