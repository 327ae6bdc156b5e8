"""``SkipLayerNormalization`` written back as ``Add`` + ``Add`` + ``LayerNormalization`` (standard ONNX ops).

onnxruntime's transformer optimizer fuses every residual ``Add`` + ``LayerNorm`` of a BERT block into the
contrib op ``SkipLayerNormalization``. On the 2-vCPU AMD EPYC (Zen 4, AVX-512) host of issue 17, ORT 1.32's
CPU kernel for it runs ~5× slower than the standard ops it replaces and does not use the second thread
(rows × 384, median µs on 2 threads: 128 rows 250 vs 50; 4,096 rows 8,000 vs 1,900), which made the
twelve of them in MiniLM about a quarter of a batch-1 run. ``LayerNormalization`` runs on MLAS's
vectorized kernel.

The order keeps the graph as built: onnxruntime's own ``SkipLayerNormFusion`` (applied at session creation)
folds an ``Add`` of two activations feeding a LayerNormalization back into the slow op, so the last ``Add``
before the norm is the constant bias: ``LayerNorm((input + skip) + bias)``, which ORT 1.32 leaves alone
(input + bias first, then + skip, it re-fuses). Without a bias the two activations go through ``Sum``,
which the fusion does not match. [32, 128, 384] on 2 vCPUs, best of 30: SkipLayerNormalization 7.97 ms,
Add + Add + LayerNormalization 1.41 ms, Sum + LayerNormalization 1.79 ms. The same fp32 sum, in the
order the unfused model computed it.
"""

from __future__ import annotations

import onnx
from onnx import helper

SKIP_LAYERNORM = "SkipLayerNormalization"
MIN_OPSET = 17  # LayerNormalization entered the standard opset in 17


def plain_layernorm(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every ``SkipLayerNormalization`` as ``Add`` → ``Add(bias)`` (or ``Sum`` when it has
    no bias) → ``LayerNormalization``, and every unfused residual sum in the order ORT leaves alone;
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
        if bias:
            nodes.append(helper.make_node("Add", [x, skip], [f"{name}/residual"], name=f"{name}/add_skip"))
            nodes.append(helper.make_node("Add", [f"{name}/residual", bias], [total], name=f"{name}/add_bias"))
        else:
            nodes.append(helper.make_node("Sum", [x, skip], [total], name=f"{name}/sum"))
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
    return out, rewritten + _bias_last(out)


def _bias_last(model: onnx.ModelProto) -> int:
    """Residual sums the export wrote unfused, ``LayerNorm((input + bias) + skip)``, reordered in place to
    ``LayerNorm((input + skip) + bias)``: onnxruntime fuses the first order into ``SkipLayerNormalization`` at
    session creation (the classifier's export reaches the build that way). Only an ``Add`` of a constant whose
    result feeds nothing but the residual ``Add`` is moved; returns how many were."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    position = {name: index for index, node in enumerate(graph.node) for name in node.output}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    for output in graph.output:
        uses[output.name] = uses.get(output.name, 0) + 1
    moved = 0
    for norm in [n for n in graph.node if n.op_type == "LayerNormalization" and n.domain in ("", "ai.onnx")]:
        residual = producers.get(norm.input[0])
        if residual is None or residual.op_type != "Add" or uses.get(residual.output[0]) != 1:
            continue
        for side in (0, 1):
            biased, skip = producers.get(residual.input[side]), residual.input[1 - side]
            if (
                biased is None
                or biased.op_type != "Add"
                or uses.get(biased.output[0]) != 1
                or skip in constants
                or sum(name in constants for name in biased.input) != 1
                or position.get(skip, -1) > position[biased.output[0]]  # the nodes stay in topological order
            ):
                continue
            bias = next(name for name in biased.input if name in constants)
            source = next(name for name in biased.input if name not in constants)
            # biased := source + skip; residual := biased + bias (same nodes, same names, new order)
            biased.input[:] = [source, skip]
            residual.input[:] = [biased.output[0], bias]
            moved += 1
            break
    return moved
