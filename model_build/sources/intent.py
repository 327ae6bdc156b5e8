"""The ``rag-intent-classifier`` logistic-regression head on all-MiniLM-L6-v2, as one torch module.

The package's head was fit on sentence-transformers embeddings (mean pooled, L2-normalised), so the
module is encoder → mean pool → normalize → ``nn.Linear`` with the head's ``coef_``/``intercept_``
(softmax of those logits = the head's ``predict_proba``). Label names: the package's ``label_map``
maps numeric class ids to names; its five meta-intents are classes named by themselves. A class id
with no name in the map would be served as ``intent_<id>`` (none in 1.0.7; see README).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from functions.contract import Task
from model_build.graph.fused_bert import FusedBertEncoder
from model_build.sources import SourceModel
from model_build.sources.minilm import load_bert, mean_pool_normalize, mean_pooled_normalized, minilm_dir


def package_models_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("rag_intent_classifier")
    if spec is None or spec.origin is None:
        raise RuntimeError("rag-intent-classifier is not installed: pip install 'maas[build]'")
    return Path(spec.origin).parent / "models"


def readable_label(class_id: str, label_map: dict[str, Any]) -> str:
    """The human name of a class: its label-map name, itself when the class is already a name."""
    mapped = label_map.get(class_id)
    if isinstance(mapped, str) and mapped and not mapped.lstrip("-").isdigit():
        return mapped
    if not class_id.lstrip("-").isdigit():
        return class_id
    return f"intent_{class_id}"


def load_head() -> tuple[torch.nn.Linear, list[str]]:
    # Build-time only, on the package's own bundled files; the runtime never unpickles anything.
    import joblib

    models = package_models_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn version-skew warning on unpickle
        clf = joblib.load(models / "LogisticRegression.joblib")
        label_map = joblib.load(models / "label_map.joblib")
    coef = torch.tensor(clf.coef_, dtype=torch.float32)
    linear = torch.nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        linear.weight.copy_(coef)
        linear.bias.copy_(torch.tensor(clf.intercept_, dtype=torch.float32))
    labels = [readable_label(str(c), label_map) for c in clf.classes_]
    return linear, labels


class IntentClassifier(torch.nn.Module):
    """encoder → mean pool → L2 normalise → linear head (logits)."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Linear) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.head(mean_pool_normalize(hidden, attention_mask))


def load_intent_classifier() -> SourceModel:
    path = minilm_dir()
    bert = load_bert(path)
    head, labels = load_head()
    exported = IntentClassifier(FusedBertEncoder(bert), head).eval()
    return SourceModel(
        task=Task.TEXT_CLASSIFICATION,
        module=exported,
        tokenizer_file=path / "tokenizer.json",
        output_names=["logits"],
        # the torch original: the HF encoder (not the fused re-implementation) with the same head
        reference=lambda batch: head(mean_pooled_normalized(bert, batch)),
        model_type="bert",
        num_heads=bert.config.num_attention_heads,
        hidden_size=bert.config.hidden_size,
        labels=labels,
    )
