"""Model sources: each returns a SourceModel — the torch module to export plus what the runtime needs.

A catalog entry's ``source`` is ``"package.module:callable"`` (called with no arguments) or a local
checkpoint directory loaded with transformers' Auto classes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from functions.contract import Task


@dataclass
class SourceModel:
    """What a source hands to the build.

    ``module`` is exported as-is: ``forward(input_ids, attention_mask, token_type_ids)`` returning the
    graph outputs named in ``output_names``. ``reference`` computes the task's final output in torch
    (pooled + normalised embeddings, or logits) from the same encoded batch — the parity baseline.
    """

    task: Task
    module: torch.nn.Module
    tokenizer_file: Path
    output_names: list[str]
    reference: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    model_type: str = "bert"  # onnxruntime.transformers optimizer family
    num_heads: int = 0
    hidden_size: int = 0
    pooling: str = "none"
    normalize: bool = False
    embedding_dim: int | None = None
    labels: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_source(spec: str, *, task: Task | None = None) -> SourceModel:
    """Resolve a catalog ``source``: ``module:callable`` or a local checkpoint directory."""
    if ":" in spec and not Path(spec).exists():
        module_name, _, attr = spec.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        source = factory()
        if not isinstance(source, SourceModel):
            raise TypeError(f"{spec} returned {type(source).__name__}, expected SourceModel")
        return source
    from model_build.sources.checkpoint import load_checkpoint

    return load_checkpoint(Path(spec), task=task)
