"""torch → ONNX with the dynamo exporter (onnxscript), dynamic batch and sequence axes.

The legacy TorchScript exporter (``dynamo=False``) gives wrong BERT outputs with torch 2.13 +
transformers 5; the build's parity gate would catch that, but we never take that path.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from model_build.graph.fused_bert import onnx_translations
from model_build.sources import SourceModel

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 18


def sample_text_inputs(batch: int = 2, seq: int = 16) -> dict[str, torch.Tensor]:
    ids = torch.randint(1000, 2000, (batch, seq), dtype=torch.long)
    ids[:, 0] = 101
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[-1, seq // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def export_text_encoder(source: SourceModel, output: Path) -> Path:
    """Export ``forward(input_ids, attention_mask, token_type_ids)`` with dynamic [batch, sequence]."""
    output.parent.mkdir(parents=True, exist_ok=True)
    example = sample_text_inputs()
    batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence", min=2, max=4096)
    dynamic = {name: {0: batch, 1: seq} for name in TEXT_INPUTS}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            source.module.eval(),
            args=(),
            kwargs=example,
            dynamo=True,
            input_names=list(TEXT_INPUTS),
            output_names=source.output_names,
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
            custom_translation_table=onnx_translations(),
        )
    assert program is not None
    program.save(str(output), external_data=False)
    return output
