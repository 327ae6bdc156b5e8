"""``SkipLayerNormalization`` written back as ``Sum`` + ``LayerNormalization`` (standard ONNX ops).

onnxruntime's transformer optimizer fuses every residual ``Add`` + ``LayerNorm`` of a BERT block into the
contrib op ``SkipLayerNormalization``. On the 2-vCPU AMD EPYC (Zen 4, AVX-512) host of issue 17, ORT 1.32's
CPU kernel for it runs ~5× slower than the standard ops it replaces and does not use the second thread
(rows × 384, median µs on 2 threads: 128 rows 250 vs 50; 4,096 rows 8,000 vs 1,900), which made the
twelve of them in MiniLM about a quarter of a batch-1 run. ``LayerNormalization`` runs on MLAS's
vectorized kernel.

``Sum`` rather than two ``Add`` nodes: one kernel for residual + input + bias, and onnxruntime's own
``SkipLayerNormFusion`` (applied at session creation) matches ``Add``, so the graph stays as built.
Numerically the same sum in fp32 (the order of the three terms may differ in the last bit).
"""

from __future__ import annotations

import onnx
from onnx import helper

SKIP_LAYERNORM = "SkipLayerNormalization"
MIN_OPSET = 17  # LayerNormalization entered the standard opset in 17


def plain_layernorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every ``SkipLayerNormalization`` as ``Sum`` → ``LayerNormalization``;
    returns it and how many were rewritten. Nodes whose optional mean/inv-std/sum outputs are used are kept, and
    so is a graph below opset 17 (raising its opset could change the meaning of its other ops)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if any(o.domain in ("", "ai.onnx") and o.version < MIN_OPSET for o in out.opset_import):
        return out, 0
    consumed = {name for node in out.graph.node for name in node.input} | {o.name for o in out.graph.output}
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in out.graph.node:
        if (
            node.op_type != SKIP_LAYERNORM
            or node.domain != "com.microsoft"
            or any(name and name in consumed for name in node.output[1:])
        ):
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x, skip, gamma = node.input[0], node.input[1], node.input[2]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        name = node.name or node.output[0]
        total = f"{name}/residual_sum"
        nodes.append(helper.make_node("Sum", [x, skip, *([bias] if bias else [])], [total], name=f"{name}/sum"))
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [total, gamma, *([beta] if beta else [])],
                [node.output[0]],
                name=f"{name}/layernorm",
                axis=-1,
                epsilon=float(attrs.get("epsilon", 1e-12)),
            )
        )
        rewritten += 1
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, rewritten
