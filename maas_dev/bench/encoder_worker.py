"""One encoder case (embeddings or the intent classifier) of `maas bench --peers`, in its own process.

Every case maps a list of texts to the task's output: L2-normalised mean-pooled vectors for embeddings,
class probabilities for the classifier (the peers' vectors through the same linear head, in numpy — what a
user of an embedding library does with a scikit-learn head). Kinds:

- ``ort``: an ONNX file run by onnxruntime with its *default* session options (what sentence-transformers'
  ONNX backend and fastembed do), the model's tokenizer (truncation 256, padding to the longest), numpy
  mean pooling. The leanest way to run a peer's graph: no wrapper overhead is counted against it.
- ``fastembed``: fastembed's ``TextEmbedding`` on a local folder (its recipe for this model: the fp32 graph).
- ``sentence-transformers``: ``SentenceTransformer.encode`` in torch eager, fp32.
- ``maas``: the built artifact through the runtime's own pipeline (``functions.inference``).

Run as ``python -m maas_dev.bench.encoder_worker`` (see ``maas_dev.bench.worker`` for the protocol).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from maas_dev.bench.worker import PeerUnavailable, require, serve, timed

PEER_HINT = "install the peers (pip install 'maas[peers]') in a separate venv and set MAAS_PEER_PYTHON to its python"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def _pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    pooled = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
    return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


class EncoderRunner(ABC):
    """Texts → task outputs, plus the timing and output calls the parent makes."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.workloads: dict[str, list[list[str]]] = spec["workloads"]

    @abstractmethod
    def predict(self, texts: list[str]) -> np.ndarray:
        """The task's output for ``texts``: vectors ``[n, dim]`` or class probabilities ``[n, classes]``."""

    def time(self, workload: str, repeats: int, warmup: int = 1) -> list[float]:
        """Seconds per call, cycling over the workload's calls (each a list of texts)."""
        calls = self.workloads[workload]
        for i in range(warmup):
            self.predict(calls[i % len(calls)])
        return [timed(lambda i=i: self.predict(calls[i % len(calls)])) for i in range(repeats)]

    def outputs(self, texts: list[str], path: str, batch: int = 32) -> list[int]:
        """The task outputs for ``texts`` (in batches) saved as .npy at ``path``; returns the shape."""
        result = np.concatenate([self.predict(texts[i : i + batch]) for i in range(0, len(texts), batch)])
        np.save(path, result)
        return list(result.shape)


class PeerRunner(EncoderRunner):
    """A peer's pooled vectors; for the classifier, through the same linear head (the spec's ``head``)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        self.head: tuple[np.ndarray, np.ndarray] | None = None
        if spec.get("head"):
            with np.load(spec["head"]) as head:
                self.head = (head["weight"].astype(np.float32), head["bias"].astype(np.float32))

    @abstractmethod
    def vectors(self, texts: list[str]) -> np.ndarray:
        """L2-normalised mean-pooled vectors ``[n, dim]``."""

    def predict(self, texts: list[str]) -> np.ndarray:
        vectors = self.vectors(texts)
        if self.head is None:
            return vectors
        weight, bias = self.head
        return _softmax(vectors @ weight.T + bias)


class OrtRunner(PeerRunner):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        ort = require("onnxruntime", "pip install onnxruntime")
        tokenizers = require("tokenizers", "pip install tokenizers")
        if not Path(spec["model"]).is_file():
            raise PeerUnavailable(f"{spec['model']} does not exist; {spec.get('how', '')}")
        self.session = ort.InferenceSession(spec["model"], providers=["CPUExecutionProvider"])  # ORT defaults
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizers.Tokenizer.from_file(spec["tokenizer"])
        self.tokenizer.enable_truncation(max_length=spec.get("max_seq_len", 256))
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def vectors(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.session.run(None, {name: feeds[name] for name in self.inputs})[:1]
        return _pool(hidden, mask)


class FastembedRunner(PeerRunner):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        fastembed = require("fastembed", PEER_HINT)
        if not (Path(spec["model_dir"]) / "model.onnx").is_file():
            raise PeerUnavailable(f"no model.onnx in {spec['model_dir']}; {spec.get('how', '')}")
        self.model = fastembed.TextEmbedding(
            model_name=spec["model_name"], specific_model_path=spec["model_dir"], lazy_load=False
        )

    def vectors(self, texts: list[str]) -> np.ndarray:
        return np.stack(list(self.model.embed(texts, batch_size=max(1, len(texts))))).astype(np.float32)


class SentenceTransformersRunner(PeerRunner):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", PEER_HINT)
        torch = require("torch", PEER_HINT)
        torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
        self.model = st.SentenceTransformer(spec["model_dir"], device="cpu")

    def vectors(self, texts: list[str]) -> np.ndarray:
        out = self.model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


class MaasRunner(EncoderRunner):
    """The maas artifact through the runtime (vectors, or the classifier's own probabilities)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        from functions.inference.loader import verify_artifact
        from functions.inference.pipelines.text import ClassificationPipeline
        from functions.inference.registry import pipeline_for

        directory = Path(spec["artifact"])
        self.pipeline = pipeline_for(directory, verify_artifact(directory))
        self.classifier = isinstance(self.pipeline, ClassificationPipeline)

    def predict(self, texts: list[str]) -> np.ndarray:
        if self.classifier:
            return np.asarray(self.pipeline.probabilities(texts)[0], dtype=np.float32)
        return np.asarray(self.pipeline.embed(texts)[0], dtype=np.float32)


RUNNERS: dict[str, type[EncoderRunner]] = {
    "ort": OrtRunner,
    "fastembed": FastembedRunner,
    "sentence-transformers": SentenceTransformersRunner,
    "maas": MaasRunner,
}


def make_runner(spec: dict[str, Any]) -> EncoderRunner:
    return RUNNERS[spec["kind"]](spec)


if __name__ == "__main__":
    serve(make_runner)
