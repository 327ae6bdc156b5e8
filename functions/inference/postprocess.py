"""Numpy post-processing shared by the runtime and the build's validation (so they cannot drift)."""

from __future__ import annotations

import numpy as np


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of token vectors over the attention mask, as sentence-transformers' Pooling(mean) does."""
    mask = attention_mask[..., None].astype(hidden.dtype)
    summed = (hidden * mask).sum(axis=1)
    counts = np.clip(mask.sum(axis=1), 1e-9, None)
    pooled: np.ndarray = (summed / counts).astype(np.float32)
    return pooled


def cls_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    pooled: np.ndarray = hidden[:, 0, :].astype(np.float32)
    return pooled


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit vectors, with sentence-transformers' epsilon (torch.nn.functional.normalize, eps=1e-12)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: np.ndarray = (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
    return unit


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probs: np.ndarray = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probs


def ranked_labels(probs: np.ndarray, labels: list[str], top_k: int) -> list[list[dict[str, object]]]:
    """Per row, the ``top_k`` labels with their probabilities, best first (ties keep label order)."""
    top_k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
    return [[{"label": labels[j], "score": float(probs[i, j])} for j in order[i]] for i in range(len(probs))]


def best_label_tensors(probs: np.ndarray, labels: list[str]) -> dict[str, np.ndarray]:
    """The OIP outputs of a classifier: best label (BYTES), its score, and all probabilities."""
    best = probs.argmax(axis=1)
    return {
        "label": np.array([labels[j].encode() for j in best], dtype=object),
        "score": probs[np.arange(len(best)), best].astype(np.float32),
        "probabilities": probs,
    }


POOLERS = {"mean": mean_pool, "cls": cls_pool}
