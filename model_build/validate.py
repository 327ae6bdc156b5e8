"""Quality gates: the artifact, run through the runtime's own pipeline, against the torch original.

Each gate is measured, recorded in the manifest, and fails the build (``GateError``) when unmet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from functions.contract import GateResult, Task
from functions.inference.pipelines import Pipeline
from functions.inference.pipelines.text import ClassificationPipeline, EmbeddingPipeline
from functions.inference.postprocess import softmax
from model_build import DATA_DIR
from model_build.catalog import Gates
from model_build.sources import SourceModel

EVAL_BATCH = 32


class GateError(RuntimeError):
    """A quality gate failed: the build produced no artifact."""

    def __init__(self, model: str, failed: list[GateResult]) -> None:
        lines = [
            f"  {g.name}: measured {g.value:.6g}, required {g.comparison} {g.threshold:g}"
            + (f" ({g.detail})" if g.detail else "")
            for g in failed
        ]
        super().__init__(f"build of {model} failed {len(failed)} quality gate(s):\n" + "\n".join(lines))
        self.failed = failed


def heldout_texts(task: Task) -> list[str]:
    """Held-out inputs written for this repo (never used to fit anything).

    Embeddings are judged on 300 varied real-world sentences; the intent classifier on 240
    assistant utterances from its own domain. (On the generic sentences, which are out of domain and
    where the classifier's top-2 margin is often < 0.01, agreement is lower: see the README.)
    """
    name = "intent_utterances.txt" if task is Task.TEXT_CLASSIFICATION else "heldout_sentences.txt"
    return [s for s in (DATA_DIR / name).read_text(encoding="utf-8").splitlines() if s.strip()]


def calibration_texts(task: Task) -> list[str]:
    """Texts to measure activations on (outlier channels), disjoint from the task's held-out set: each
    text task calibrates on the other's held-out file, so no gate is judged on what tuned the model."""
    name = "heldout_sentences.txt" if task is Task.TEXT_CLASSIFICATION else "intent_utterances.txt"
    return [s for s in (DATA_DIR / name).read_text(encoding="utf-8").splitlines() if s.strip()]


def calibration_batches(tokenizer: Path, task: Task, *, max_seq_len: int, batch: int = 32) -> list[dict[str, Any]]:
    """``calibration_texts`` through the runtime's own tokenizer, as session feeds."""
    from functions.inference.tokenizer import TextEncoder

    texts = calibration_texts(task)
    encoder = TextEncoder(tokenizer, max_seq_len=max_seq_len, max_input_chars=1_000_000)
    return [encoder.encode(texts[i : i + batch], truncate=True).feeds() for i in range(0, len(texts), batch)]


def gate(name: str, value: float, threshold: float, comparison: str, detail: str = "") -> GateResult:
    passed = value >= threshold if comparison == ">=" else value <= threshold
    return GateResult(
        name=name,
        value=float(value),
        threshold=threshold,
        comparison=comparison,  # type: ignore[arg-type]
        passed=bool(passed),
        detail=detail,
    )


def _batched(pipeline: Pipeline, texts: list[str], fn: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    return np.concatenate([fn(texts[i : i + EVAL_BATCH]) for i in range(0, len(texts), EVAL_BATCH)])


def runtime_outputs(pipeline: Pipeline, texts: list[str]) -> np.ndarray:
    """The task's final outputs as the runtime serves them (embeddings, or class probabilities)."""
    if isinstance(pipeline, EmbeddingPipeline):
        return _batched(pipeline, texts, lambda chunk: pipeline.embed(chunk)[0])
    if isinstance(pipeline, ClassificationPipeline):
        return _batched(pipeline, texts, lambda chunk: pipeline.probabilities(chunk)[0])
    raise TypeError(f"no validation for {type(pipeline).__name__}")


def torch_outputs(source: SourceModel, pipeline: Pipeline, texts: list[str]) -> np.ndarray:
    """The torch original on the very same token ids the runtime produced."""
    assert isinstance(pipeline, EmbeddingPipeline | ClassificationPipeline)

    def run(chunk: list[str]) -> np.ndarray:
        batch = pipeline.encoder.encode(chunk, truncate=True)
        with torch.inference_mode():
            out = source.reference({k: torch.from_numpy(v) for k, v in batch.feeds().items()}).numpy()
        return softmax(out) if source.task is Task.TEXT_CLASSIFICATION else out.astype(np.float32)

    return _batched(pipeline, texts, run)


def parity_gate(reference: np.ndarray, fp32: np.ndarray, gates: Gates) -> GateResult:
    diff = float(np.abs(reference - fp32).max())
    return gate("fp32_max_abs_diff", diff, gates.fp32_max_abs_diff, "<=", f"{len(reference)} held-out inputs")


def quality_gates(task: Task, reference: np.ndarray, served: np.ndarray, gates: Gates) -> list[GateResult]:
    results: list[GateResult] = []
    n = f"{len(reference)} held-out inputs"
    if task is Task.SENTENCE_EMBEDDINGS:
        ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
        got = served / np.linalg.norm(served, axis=1, keepdims=True)
        cosine = (ref * got).sum(axis=1)
        if gates.quantized_mean_cosine is not None:
            results.append(gate("quantized_mean_cosine", cosine.mean(), gates.quantized_mean_cosine, ">=", n))
        if gates.quantized_min_cosine is not None:
            results.append(gate("quantized_min_cosine", cosine.min(), gates.quantized_min_cosine, ">=", n))
    if task is Task.TEXT_CLASSIFICATION and gates.quantized_top1_agreement is not None:
        agreement = float((reference.argmax(1) == served.argmax(1)).mean())
        results.append(gate("quantized_top1_agreement", agreement, gates.quantized_top1_agreement, ">=", n))
    return results


def size_gates(fp32_bytes: int, served_bytes: int, gates: Gates) -> list[GateResult]:
    results = []
    if gates.max_size_ratio is not None:
        ratio = served_bytes / fp32_bytes
        detail = f"{served_bytes / 1e6:.1f} MB of {fp32_bytes / 1e6:.1f} MB"
        results.append(gate("size_ratio", ratio, gates.max_size_ratio, "<=", detail))
    if gates.max_size_mb is not None:
        results.append(gate("size_mb", served_bytes / 1e6, gates.max_size_mb, "<="))
    return results


def enough_heldout(count: int, gates: Gates) -> GateResult:
    return gate("heldout_count", count, gates.min_heldout, ">=", "inputs judged")
