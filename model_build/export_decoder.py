"""Decoder-only LMs → one ONNX graph with a KV cache (dynamo exporter).

Graph contract (what ``functions.inference.pipelines.generation`` feeds):

    inputs   input_ids [batch, sequence] int64, attention_mask [batch, total_sequence] int64,
             position_ids [batch, sequence] int64,
             past_key_values.{i}.key / .value [batch, kv_heads, past_sequence, head_dim] float32
    outputs  logits [batch, 1, vocab] float32 — the LAST position only (all a sampler needs; it saves
             a vocab-sized MatMul per prompt token at prefill),
             present.{i}.key / .value [batch, kv_heads, total_sequence, head_dim] float32

The first step feeds an empty past (``past_sequence = 0``); each later step feeds the presents back.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import DynamicCache, LlamaForCausalLM

OPSET = 18


def cache_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    present = [f"present.{i}.{kind}" for i in range(num_layers) for kind in ("key", "value")]
    return past, present


class DecoderWithCache(torch.nn.Module):
    """Flat tensors in and out around a HF causal LM; the DynamicCache is built inside ``forward``."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        super().__init__()
        self.model = model
        self.num_layers = int(model.config.num_hidden_layers)
        # An untied copy of the LM head: with tied embeddings the exporter would emit MatMul(x, Transpose(E)),
        # which weight-only quantizers cannot touch (B is not an initializer); a plain [hidden, vocab]
        # initializer becomes a 4-bit MatMulNBits while the embedding table stays a Gather.
        self.lm_head = torch.nn.Parameter(model.lm_head.weight.detach().t().contiguous(), requires_grad=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache(config=self.model.config)
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.model.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        logits = torch.matmul(out.last_hidden_state[:, -1:, :], self.lm_head)
        presents: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            presents += [layer.keys, layer.values]
        return (logits, *presents)


def sample_inputs(model: LlamaForCausalLM, *, batch: int = 2, seq: int = 3, past: int = 5) -> list[torch.Tensor]:
    config = model.config
    shape = (batch, config.num_key_value_heads, past, config.head_dim)
    ids = torch.randint(100, 1000, (batch, seq), dtype=torch.long)
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    positions = torch.arange(past, past + seq, dtype=torch.long).expand(batch, seq).contiguous()
    cache = [torch.randn(shape) for _ in range(2 * config.num_hidden_layers)]
    return [ids, mask, positions, *cache]


def export_decoder(model: LlamaForCausalLM, output: Path) -> Path:
    """Export ``DecoderWithCache(model)`` with dynamic batch, sequence and past_sequence axes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    wrapper = DecoderWithCache(model.eval())
    past_names, present_names = cache_names(wrapper.num_layers)
    batch = torch.export.Dim("batch", min=1, max=64)
    seq = torch.export.Dim("sequence", min=1, max=8192)
    past = torch.export.Dim("past_sequence", min=0, max=8192)
    total = torch.export.Dim("total_sequence", min=1, max=16384)
    cache_dims = {0: batch, 2: past}
    # ``*past`` is one varargs entry to torch.export, so its shapes nest in one tuple.
    dynamic = ({0: batch, 1: seq}, {0: batch, 1: total}, {0: batch, 1: seq}, tuple(cache_dims for _ in past_names))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            args=tuple(sample_inputs(model)),
            dynamo=True,
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *present_names],
            dynamic_shapes=dynamic,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
    assert program is not None
    program.save(str(output), external_data=False)
    return output
