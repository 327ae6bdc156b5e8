"""Llama-family decoders written directly as an ONNX Runtime-fused graph, from the torch weights.

The dynamo export of a HF decoder spells attention as ~40 small ops per layer (rotary Slice/Neg/Concat,
cache Concat, GQA head Expand/Reshape, MatMul/Softmax/MatMul with a causal mask built at run time);
ORT's optimizers do not fuse them, and on SmolLM2 they were a quarter of every decode step. Like
onnxruntime-genai's model builder, this module writes the graph ORT runs best instead — per layer:

    SkipSimplifiedLayerNormalization → one MatMul for q|k|v → GroupQueryAttention (rotary, KV cache
    append, causal softmax in one kernel) → MatMul o → SkipSimplifiedLayerNormalization → one MatMul
    for gate|up → Split → SiLU · up → MatMul down

with the same graph contract as ``export_decoder`` (same input and output names and shapes), so the
runtime's ``KVCacheDecoder`` drives either; the metadata ``maas.kv_cache = shared-buffer`` tells it
that it may also keep the cache in place (one preallocated buffer per layer). Weights stay plain fp32
MatMul initializers [in, out]: the quantize step (e.g. ``grid_repack``) treats them like any export's.
Batch rows must be unpadded (the runtime runs one sequence per session call): ``GroupQueryAttention``
derives each row's positions from its attention-mask length.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from transformers import LlamaForCausalLM

from functions.inference.decoding.kv_cache import KV_CACHE_METADATA, SHARED_BUFFER
from model_build.export_decoder import cache_names

OPSET = 18
MS_DOMAIN = "com.microsoft"
SUPPORTED_MODEL_TYPES = {"llama"}
# Rotary types whose frequencies are fixed at load (the caches are precomputed from the model's inv_freq).
STATIC_ROPE_TYPES = {"default", "linear", "llama3"}


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | int, name: str, **attrs: object) -> list[str]:
        names = [f"{name}/out{i}" for i in range(outputs)] if isinstance(outputs, int) else outputs
        domain = MS_DOMAIN if op in ("GroupQueryAttention", "SkipSimplifiedLayerNormalization") else ""
        self.nodes.append(helper.make_node(op, inputs, names, name=name, domain=domain, **attrs))
        return names


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to(torch.float32).cpu().numpy()


def rotary_caches(model: LlamaForCausalLM) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [max_positions, head_dim / 2] from the model's own rotary module (its scaling included)."""
    rotary = model.model.rotary_emb
    positions = int(model.config.max_position_embeddings)
    inv_freq = rotary.inv_freq.detach().to(torch.float64)
    freqs = torch.outer(torch.arange(positions, dtype=torch.float64), inv_freq)
    scaling = float(getattr(rotary, "attention_scaling", 1.0))
    cos = (freqs.cos() * scaling).to(torch.float32).numpy()
    sin = (freqs.sin() * scaling).to(torch.float32).numpy()
    return cos, sin


def unsupported(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot be written as a fused graph (None when it can): the caller exports it instead."""
    config = getattr(model, "config", None)
    if config is None or config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"fused decoder graphs support {sorted(SUPPORTED_MODEL_TYPES)} models"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "fused decoder graphs do not support attention/MLP biases"
    if config.hidden_act != "silu":
        return f"fused decoder graphs support SiLU MLPs, not {config.hidden_act}"
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope not in STATIC_ROPE_TYPES:
        return f"fused decoder graphs need a position-independent rotary frequency table, not rope_type {rope}"
    return None


def build_decoder_graph(model: LlamaForCausalLM, output: Path) -> Path:
    """Write ``model``'s fused decoder graph to ``output``; returns ``output``."""
    reason = unsupported(model)
    if reason is not None:
        raise ValueError(reason)
    config = model.config
    layers = int(config.num_hidden_layers)
    heads, kv_heads, head_dim = int(config.num_attention_heads), int(config.num_key_value_heads), int(config.head_dim)
    eps = float(config.rms_norm_eps)
    past_names, present_names = cache_names(layers)
    g = _Graph()

    # Per-row lengths for GroupQueryAttention: seqlens_k = tokens seen − 1, total = the mask's width.
    axes = g.weight("const.axes_1", np.array([1], dtype=np.int64))
    one = g.weight("const.one", np.array(1, dtype=np.int64))
    (mask_sum,) = g.node("ReduceSum", ["attention_mask", axes], 1, "seqlens/sum", keepdims=0)
    (minus_one,) = g.node("Sub", [mask_sum, one], 1, "seqlens/sub")
    (seqlens,) = g.node("Cast", [minus_one], ["seqlens_k"], "seqlens/cast", to=TensorProto.INT32)
    (mask_shape,) = g.node("Shape", ["attention_mask"], 1, "total/shape")
    (width,) = g.node("Gather", [mask_shape, one], 1, "total/gather", axis=0)
    (total,) = g.node("Cast", [width], ["total_sequence_length"], "total/cast", to=TensorProto.INT32)
    cos, sin = rotary_caches(model)
    cos_name, sin_name = g.weight("rotary.cos_cache", cos), g.weight("rotary.sin_cache", sin)

    state = model.model
    embed = g.weight("model.embed_tokens.weight", _numpy(state.embed_tokens.weight))
    (hidden,) = g.node("Gather", [embed, "input_ids"], 1, "embed", axis=0)
    residual: str | None = None
    for i, layer in enumerate(state.layers):
        prefix = f"layers.{i}"
        attn, mlp = layer.self_attn, layer.mlp
        norm_in = g.weight(f"{prefix}.input_layernorm.weight", _numpy(layer.input_layernorm.weight))
        if residual is None:
            (normed,) = g.node(
                "SimplifiedLayerNormalization",
                [hidden, norm_in],
                1,
                f"{prefix}/norm_in",
                epsilon=eps,
                axis=-1,
                stash_type=1,
            )
            residual = hidden
        else:
            normed, _, _, residual = g.node(
                "SkipSimplifiedLayerNormalization", [hidden, residual, norm_in], 4, f"{prefix}/norm_in", epsilon=eps
            )
        # q, k and v as one MatMul whose packed output GroupQueryAttention reads directly.
        w_qkv = np.concatenate([_numpy(getattr(attn, p).weight).T for p in ("q_proj", "k_proj", "v_proj")], axis=1)
        (qkv,) = g.node(
            "MatMul", [normed, g.weight(f"{prefix}.self_attn.qkv_proj.weight", w_qkv)], 1, f"{prefix}/attn/qkv_proj"
        )
        (context, _, _) = g.node(
            "GroupQueryAttention",
            [qkv, "", "", past_names[2 * i], past_names[2 * i + 1], seqlens, total, cos_name, sin_name],
            [f"{prefix}/attn/context", present_names[2 * i], present_names[2 * i + 1]],
            f"{prefix}/attn/gqa",
            num_heads=heads,
            kv_num_heads=kv_heads,
            do_rotary=1,
            rotary_interleaved=0,
            scale=float(attn.scaling),
        )
        w_o = g.weight(f"{prefix}.self_attn.o_proj.weight", _numpy(attn.o_proj.weight).T)
        (attn_out,) = g.node("MatMul", [context, w_o], 1, f"{prefix}/attn/o_proj")
        norm_post = g.weight(f"{prefix}.post_attention_layernorm.weight", _numpy(layer.post_attention_layernorm.weight))
        normed, _, _, residual = g.node(
            "SkipSimplifiedLayerNormalization", [attn_out, residual, norm_post], 4, f"{prefix}/norm_post", epsilon=eps
        )
        w_gate_up = np.concatenate([_numpy(mlp.gate_proj.weight).T, _numpy(mlp.up_proj.weight).T], axis=1)
        (gate_up,) = g.node(
            "MatMul",
            [normed, g.weight(f"{prefix}.mlp.gate_up_proj.weight", w_gate_up)],
            1,
            f"{prefix}/mlp/gate_up_proj",
        )
        gate, up = g.node("Split", [gate_up], 2, f"{prefix}/mlp/split", axis=-1, num_outputs=2)
        (sigmoid,) = g.node("Sigmoid", [gate], 1, f"{prefix}/mlp/sigmoid")
        (silu,) = g.node("Mul", [gate, sigmoid], 1, f"{prefix}/mlp/silu")
        (act,) = g.node("Mul", [silu, up], 1, f"{prefix}/mlp/act")
        w_down = g.weight(f"{prefix}.mlp.down_proj.weight", _numpy(mlp.down_proj.weight).T)
        (hidden,) = g.node("MatMul", [act, w_down], 1, f"{prefix}/mlp/down_proj")

    assert residual is not None
    # Only the last position's logits leave the graph (all a sampler needs), so prefill skips the rest.
    starts = g.weight("const.last_start", np.array([-1], dtype=np.int64))
    ends = g.weight("const.last_end", np.array([np.iinfo(np.int64).max], dtype=np.int64))
    (last_hidden,) = g.node("Slice", [hidden, starts, ends, axes], 1, "last/hidden")
    (last_residual,) = g.node("Slice", [residual, starts, ends, axes], 1, "last/residual")
    norm_final = g.weight("model.norm.weight", _numpy(state.norm.weight))
    (final,) = g.node(
        "SkipSimplifiedLayerNormalization", [last_hidden, last_residual, norm_final], 1, "final_norm", epsilon=eps
    )
    # An untied [hidden, vocab] copy of the head: weight-only quantizers need B as an initializer.
    lm_head = g.weight("lm_head.weight", _numpy(model.lm_head.weight).T)
    g.node("MatMul", [final, lm_head], ["logits"], "lm_head")

    cache_shape = ["batch", kv_heads, "past_sequence", head_dim]
    present_shape = ["batch", kv_heads, "total_sequence", head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "total_sequence"]),
        # Kept for the graph contract; GroupQueryAttention derives positions from the mask (unpadded rows).
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"]),
        *(helper.make_tensor_value_info(name, TensorProto.FLOAT, cache_shape) for name in past_names),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, int(config.vocab_size)]),
        *(helper.make_tensor_value_info(name, TensorProto.FLOAT, present_shape) for name in present_names),
    ]
    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, initializer=g.initializers)
    model_proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="maas.decoder_graph",
    )
    model_proto.ir_version = 10
    # The runtime may bind each past/present pair to one preallocated buffer (GroupQueryAttention appends).
    helper.set_model_props(model_proto, {KV_CACHE_METADATA: SHARED_BUFFER})
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model_proto, str(output))
    return output
