"""Outlier channels kept in fp32 (LLM.int8()-style decomposition) before dynamic INT8 quantization.

Dynamic INT8 quantizes each MatMul's activations with ONE scale per tensor. In BERT-style encoders a
few input channels of the FFN down-projections (after GELU) run far hotter than the rest — on
all-MiniLM-L6-v2's calibration text, layer 0's largest channel reaches 24.6 while its next is 6.3 and
the median 1.5 — so that one channel sets the scale and the other 1,535 keep ~2 bits. Splitting those
channels out:

    y = x @ W   →   y = (x · mask) @ W_masked  +  Gather(x, outliers) @ W[outliers]
                      └─ dynamic INT8, scale set by the inliers ─┘   └─ fp32, k ≤ a few rows ─┘

is exact in fp32 and lets every MatMul stay on ORT's fast INT8 path (MatMulInteger), instead of the
slower 8-bit block-wise MatMulNBits that otherwise keeps quality. Outliers are found on calibration
inputs: channels whose max |activation| exceeds ``ratio`` × the layer's 90th-percentile channel
(MiniLM: 1–2 channels of 1,536 in the first four down-projections, none in the last two; the
classifier also splits 1–3 of 384 per up-projection, mostly the residual stream's dims 99 and 223).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

DEFAULT_RATIO = 3.0
PERCENTILE = 90  # a reference channel well inside the bulk, even for narrow layers


def channel_maxima(
    model: onnx.ModelProto, matmuls: list[str], batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per input channel max |activation| of each named MatMul, over real (unpadded) tokens."""
    nodes = {node.name: node for node in model.graph.node}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inputs = [nodes[name].input[0] for name in matmuls]
    for tensor in inputs:
        probe.graph.output.append(helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    maxima = {name: np.zeros(0, dtype=np.float32) for name in matmuls}
    seen = False
    for feeds in batches:
        real = feeds["attention_mask"].astype(bool)
        outputs = session.run(inputs, {k: v for k, v in feeds.items() if k in wanted})
        for name, activation in zip(matmuls, outputs, strict=True):
            tokens = np.abs(np.asarray(activation)[real]).max(axis=0)
            maxima[name] = tokens if not maxima[name].size else np.maximum(maxima[name], tokens)
        seen = True
    if not seen:
        raise ValueError("outlier calibration needs at least one batch of inputs")
    return maxima


def pick_outliers(maxima: dict[str, np.ndarray], ratio: float = DEFAULT_RATIO) -> dict[str, np.ndarray]:
    """Channels hotter than ``ratio`` × the layer's 90th-percentile channel (possibly none)."""
    return {
        name: np.flatnonzero(m > ratio * np.percentile(m, PERCENTILE)).astype(np.int64) for name, m in maxima.items()
    }


def split_outliers(model: onnx.ModelProto, outliers: dict[str, np.ndarray]) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite each MatMul with outlier channels as the exact sum above (in place on a copy).

    Returns the model and the names of the fp32 outlier MatMuls, which the quantizer must exclude.
    The inlier MatMul keeps the original node's name, so name-based selections still apply to it.
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    kept_fp32: list[str] = []
    for node in graph.node:
        channels = outliers.get(node.name)
        if node.op_type != "MatMul" or channels is None or not channels.size:
            nodes.append(node)
            continue
        weight_init = initializers[node.input[1]]
        weight = numpy_helper.to_array(weight_init)
        name, x, y = node.name, node.input[0], node.output[0]
        mask = np.ones(weight.shape[0], dtype=np.float32)
        mask[channels] = 0
        masked = weight.copy()
        masked[channels] = 0  # those rows only ever meet zeros; zeroed, they cannot widen a weight scale
        weight_init.CopyFrom(numpy_helper.from_array(masked, weight_init.name))
        graph.initializer.extend(
            [
                numpy_helper.from_array(channels, f"{name}.outlier_channels"),
                numpy_helper.from_array(np.ascontiguousarray(weight[channels]), f"{name}.outlier_weight"),
                numpy_helper.from_array(mask, f"{name}.inlier_mask"),
            ]
        )
        nodes += [
            helper.make_node("Gather", [x, f"{name}.outlier_channels"], [f"{name}.outlier_x"], name=f"{name}.gather",
                             axis=-1),
            helper.make_node("MatMul", [f"{name}.outlier_x", f"{name}.outlier_weight"], [f"{name}.outlier_y"],
                             name=f"{name}.outliers"),
            helper.make_node("Mul", [x, f"{name}.inlier_mask"], [f"{name}.inlier_x"], name=f"{name}.mask"),
            helper.make_node("MatMul", [f"{name}.inlier_x", node.input[1]], [f"{name}.inlier_y"], name=name),
            helper.make_node("Add", [f"{name}.inlier_y", f"{name}.outlier_y"], [y], name=f"{name}.add_outliers"),
        ]  # fmt: skip
        kept_fp32.append(f"{name}.outliers")
    del graph.node[:]
    graph.node.extend(nodes)
    return result, kept_fp32
