"""``BiasGelu`` (exact, erf) written as ``FastGelu`` with the same bias (the tanh approximation of GELU).

onnxruntime's transformer optimizer fuses each FFN's bias + erf-GELU into ``BiasGelu``. On the 2-vCPU
AMD EPYC host of issue 17, ORT 1.32's CPU kernel for it took ~9.3 ms on a [32, 128, 1536] activation,
``FastGelu`` with the bias ~3.2 ms (best of 20): about a tenth of a MiniLM batch-32 run. The tanh form
differs from erf-GELU by < 1e-3 absolute (sentence-transformers' O3 export makes the same substitution); the
build's gates judge what that does to the served outputs.
"""

from __future__ import annotations

import onnx
from onnx import helper


def tanh_gelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with every ``BiasGelu`` as ``FastGelu`` (same inputs); returns it and the count."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes: list[onnx.NodeProto] = []
    rewritten = 0
    for node in out.graph.node:
        if node.op_type == "BiasGelu" and node.domain == "com.microsoft":
            nodes.append(
                helper.make_node(
                    "FastGelu", list(node.input), list(node.output), name=node.name or None, domain="com.microsoft"
                )
            )
            rewritten += 1
        else:
            nodes.append(node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out, rewritten


def gelu_bias_into_matmul(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of a dynamically quantized ``model`` where each ``FastGelu(x, bias)`` whose ``x`` is a quantized
    MatMul takes its bias from that MatMul instead: ``DynamicQuantizeMatMul(a, W, w_scale, w_zp, bias)`` then
    ``FastGelu(x)``. Returns it and the count. Where ``x`` is ``inlier_y + outlier_y`` (a projection whose
    outlier input channels run in fp32, ``outliers.py``), the bias goes to the quantized ``inlier_y``.

    ``quantize_dynamic`` writes a MatMul as ``DynamicQuantizeLinear(a)`` → ``MatMulInteger`` → ``Cast`` →
    ``Mul`` by ``a_scale · w_scale``, which onnxruntime fuses at load into ``DynamicQuantizeMatMul`` without a
    bias, and the FFN's bias stays in ``FastGelu``. ORT 1.32's ``FastGelu`` kernel is slower with a bias than
    without one (2 vCPUs, AMD EPYC, [1, 128, 1536]: 77 vs 70 µs; [32, 128, 1536]: 3.4 vs 2.7 ms), while the
    bias costs the quantized MatMul nothing: it is added as the int32 result is scaled. Where ``x`` is the
    MatMul alone the arithmetic and its order are unchanged and the outputs bit-identical; with an outlier sum
    the bias is added before it (float reassociation). Written here as the fused op because onnxruntime
    would otherwise fold a separate ``Add`` back into ``FastGelu``.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = list(out.graph.node)
    producer = {name: node for node in nodes for name in node.output}
    consumers: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    graph_outputs = {value.name for value in out.graph.output}

    def only_feeds_the_chain(node: onnx.NodeProto, uses: int) -> bool:
        used = sum(consumers.get(name, 0) for name in node.output if name)
        return used == uses and not graph_outputs.intersection(node.output)

    replaced: dict[int, list[onnx.NodeProto]] = {}
    removed: set[int] = set()
    for gelu in nodes:
        if gelu.op_type != "FastGelu" or gelu.domain != "com.microsoft" or len(gelu.input) != 2 or not gelu.input[1]:
            continue
        scaled = producer.get(gelu.input[0])
        if scaled is not None and scaled.op_type == "Add" and only_feeds_the_chain(scaled, 1):
            # the FFN input projection with fp32 outlier channels (outliers.py): inlier_y + outlier_y
            scaled = next((producer[x] for x in scaled.input if x in producer and producer[x].op_type == "Mul"), None)
        if scaled is None or scaled.op_type != "Mul" or not only_feeds_the_chain(scaled, 1):
            continue
        chain = _quantized_matmul(scaled, producer)
        if chain is None or not all(only_feeds_the_chain(n, uses) for n, uses in zip(chain, (3, 1, 1, 1), strict=True)):
            continue
        quantize, matmul, cast, scales = chain
        fused = helper.make_node(
            "DynamicQuantizeMatMul",
            [quantize.input[0], matmul.input[1], scales.input[1], matmul.input[3], gelu.input[1]],
            [scaled.output[0]],
            name=f"{matmul.name or scaled.output[0]}/with_bias",
            domain="com.microsoft",
        )
        removed.update(id(n) for n in (quantize, matmul, cast, scales))
        replaced[id(scaled)] = [fused]
        unbiased = helper.make_node("FastGelu", [gelu.input[0]], list(gelu.output), domain="com.microsoft")
        unbiased.name = gelu.name
        replaced[id(gelu)] = [unbiased]
    rewritten = [new for node in nodes if id(node) not in removed for new in replaced.get(id(node), [node])]
    del out.graph.node[:]
    out.graph.node.extend(rewritten)
    return out, len(replaced) // 2


def _quantized_matmul(
    scaled: onnx.NodeProto, producer: dict[str, onnx.NodeProto]
) -> tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto, onnx.NodeProto] | None:
    """``(DynamicQuantizeLinear, MatMulInteger, Cast, scales Mul)`` when ``scaled`` is the ``Mul`` that ends a
    MatMul as ``quantize_dynamic`` writes it, else None."""
    cast, scales = producer.get(scaled.input[0]), producer.get(scaled.input[1])
    if cast is None or cast.op_type != "Cast" or scales is None or scales.op_type != "Mul":
        return None
    matmul = producer.get(cast.input[0])
    if matmul is None or matmul.op_type != "MatMulInteger" or len(matmul.input) != 4:
        return None
    quantize = producer.get(matmul.input[0])
    if (
        quantize is None
        or quantize.op_type != "DynamicQuantizeLinear"
        or scales.input[0] != quantize.output[1]  # a_scale · w_scale
        or matmul.input[2] != quantize.output[2]  # a's zero point
    ):
        return None
    return quantize, matmul, cast, scales
