"""A BERT encoder whose self-attention exports as ONNX Runtime's fused ``com.microsoft.Attention``.

The dynamo exporter emits attention as ~15 small ops that ORT's transformer optimizer cannot fuse
(its patterns match the legacy TorchScript exporter). Here each layer's attention is one custom torch
op, ``maas::attention`` — a plain torch implementation for eager runs, translated at export into
``Attention`` with packed QKV weights, which ORT runs with one GEMM and fused softmax kernels and
which dynamic quantization turns into ``QAttention``. The module reuses the HF model's weights;
the build's parity gate compares its ONNX export with the untouched HF model.
"""

from __future__ import annotations

import math
from typing import Any

import onnx
import torch
from torch import Tensor

NUM_HEADS_ATTR = "num_heads"


@torch.library.custom_op("maas::attention", mutates_args=())
def fused_attention(x: Tensor, weight: Tensor, bias: Tensor, mask: Tensor, num_heads: int) -> Tensor:
    """Multi-head self-attention: ``x @ weight + bias`` packs Q, K, V; ``mask`` is 1 (attend) / 0 (pad)."""
    batch, seq, hidden = x.shape
    head = hidden // num_heads
    q, k, v = (x @ weight + bias).split(hidden, dim=-1)
    q, k, v = (t.view(batch, seq, num_heads, head).transpose(1, 2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, seq, hidden)


@fused_attention.register_fake
def _fused_attention_shape(x: Tensor, weight: Tensor, bias: Tensor, mask: Tensor, num_heads: int) -> Tensor:
    return torch.empty_like(x)


def _register_ort_attention_schema() -> None:
    """onnxscript needs an ONNX schema for contrib ops; register ORT's Attention (subset we use) once."""
    from onnx.defs import OpSchema

    try:
        onnx.defs.get_schema("Attention", 1, "com.microsoft")
        return
    except onnx.defs.SchemaError:
        pass
    param = OpSchema.FormalParameter
    onnx.defs.register_schema(
        OpSchema(
            "Attention",
            "com.microsoft",
            1,
            inputs=[param("input", "T"), param("weights", "T"), param("bias", "T"), param("mask_index", "M")],
            outputs=[param("output", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[OpSchema.Attribute(NUM_HEADS_ATTR, OpSchema.AttrType.INT, "attention heads")],
        )
    )


def onnx_translations() -> dict[Any, Any]:
    """The custom translation table for ``torch.onnx.export(dynamo=True)``."""
    import onnxscript
    from onnxscript import opset18 as op

    _register_ort_attention_schema()
    msft = onnxscript.values.Opset("com.microsoft", 1)

    def attention(x: Any, weight: Any, bias: Any, mask: Any, num_heads: int) -> Any:
        return msft.Attention(x, weight, bias, op.Cast(mask, to=onnx.TensorProto.INT32), num_heads=num_heads)

    return {torch.ops.maas.attention.default: attention}


class FusedBertEncoder(torch.nn.Module):
    """BERT embeddings + encoder layers (post-LN, GELU FFN) with fused attention; returns the last hidden state."""

    def __init__(self, bert: Any) -> None:
        super().__init__()
        config = bert.config
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("fused export supports absolute position embeddings only")
        self.embeddings = bert.embeddings
        self.num_heads = int(config.num_attention_heads)
        self.qkv_weight = torch.nn.ParameterList()
        self.qkv_bias = torch.nn.ParameterList()
        self.blocks = torch.nn.ModuleList()
        for layer in bert.encoder.layer:
            att = layer.attention.self
            weight = torch.cat([att.query.weight, att.key.weight, att.value.weight], dim=0).T.contiguous()
            bias = torch.cat([att.query.bias, att.key.bias, att.value.bias])
            self.qkv_weight.append(torch.nn.Parameter(weight.detach().clone(), requires_grad=False))
            self.qkv_bias.append(torch.nn.Parameter(bias.detach().clone(), requires_grad=False))
            self.blocks.append(
                torch.nn.ModuleDict(
                    {
                        "attn_out": layer.attention.output.dense,
                        "attn_norm": layer.attention.output.LayerNorm,
                        "ffn_in": layer.intermediate.dense,
                        "ffn_out": layer.output.dense,
                        "ffn_norm": layer.output.LayerNorm,
                    }
                )
            )

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor) -> Tensor:
        x = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        for i, block in enumerate(self.blocks):
            attended = torch.ops.maas.attention(x, self.qkv_weight[i], self.qkv_bias[i], attention_mask, self.num_heads)
            x = block["attn_norm"](block["attn_out"](attended) + x)
            x = block["ffn_norm"](block["ffn_out"](torch.nn.functional.gelu(block["ffn_in"](x))) + x)
        return x
