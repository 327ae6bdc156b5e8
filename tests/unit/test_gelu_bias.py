"""gelu_bias_into_matmul: a FastGelu's bias moves into the dynamically quantized MatMul that feeds it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from model_build.graph.gelu import gelu_bias_into_matmul

RNG = np.random.default_rng(7)
K, N = 32, 64


def _ffn_in(tmp_path: Path, *, outlier_path: bool = False, shared_input: bool = False) -> onnx.ModelProto:
    """x @ W (+ outliers) → FastGelu(·, bias), written in fp32 and quantized by onnxruntime's own
    ``quantize_dynamic`` as the build does (per-channel INT8 weights)."""
    init = [
        numpy_helper.from_array(RNG.normal(size=(K, N)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.normal(size=N).astype(np.float32), "bias"),
    ]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["proj"], name="ffn_in")]
    gelu_input = "proj"
    if outlier_path:  # outliers.py's shape: inlier_y + outlier_y
        init.append(numpy_helper.from_array(RNG.normal(size=(K, N)).astype(np.float32), "w_out"))
        nodes += [
            helper.make_node("MatMul", ["x", "w_out"], ["outlier_y"], name="outliers"),
            helper.make_node("Add", ["proj", "outlier_y"], ["summed"]),
        ]
        gelu_input = "summed"
    nodes.append(helper.make_node("FastGelu", [gelu_input, "bias"], ["out"], domain="com.microsoft", name="gelu"))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", N])]
    if shared_input:  # the quantized input also feeds a second quantized MatMul
        init.append(numpy_helper.from_array(RNG.normal(size=(K, N)).astype(np.float32), "w2"))
        nodes.append(helper.make_node("MatMul", ["x", "w2"], ["other"], name="other"))
        outputs.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch", "seq", N]))
    graph = helper.make_graph(
        nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])], outputs, init
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    fp32, quantized = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=opsets), fp32)
    quantize_dynamic(
        str(fp32),
        str(quantized),
        per_channel=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=["outliers"] if outlier_path else [],
        extra_options={"MatMulConstBOnly": True},
    )
    return onnx.load(str(quantized))


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def _ops(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {node.op_type: node for node in model.graph.node}


def test_the_bias_moves_into_the_quantized_matmul_with_bit_identical_outputs(tmp_path):
    quantized = _ffn_in(tmp_path)
    assert "MatMulInteger" in _ops(quantized)  # what quantize_dynamic writes

    moved, count = gelu_bias_into_matmul(quantized)

    assert count == 1
    ops = _ops(moved)
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Cast"}.isdisjoint(ops)
    assert ops["DynamicQuantizeMatMul"].input[0] == "x" and ops["DynamicQuantizeMatMul"].input[4] == "bias"
    assert list(ops["FastGelu"].input) == [ops["DynamicQuantizeMatMul"].output[0]]
    onnx.checker.check_model(moved)
    for shape in ((1, 7, K), (5, 33, K)):
        x = RNG.normal(scale=2.0, size=shape).astype(np.float32)
        np.testing.assert_array_equal(_run(moved, x)[0], _run(quantized, x)[0])


def test_with_fp32_outlier_channels_the_bias_goes_to_the_inlier_product(tmp_path):
    quantized = _ffn_in(tmp_path, outlier_path=True)

    moved, count = gelu_bias_into_matmul(quantized)

    assert count == 1
    ops = _ops(moved)
    assert ops["DynamicQuantizeMatMul"].input[4] == "bias" and len(ops["FastGelu"].input) == 1
    assert ops["FastGelu"].input[0] == ops["Add"].output[0]
    x = RNG.normal(size=(3, 9, K)).astype(np.float32)
    # (inlier + bias) + outlier instead of (inlier + outlier) + bias: equal up to float reassociation
    np.testing.assert_allclose(_run(moved, x)[0], _run(quantized, x)[0], rtol=1e-5, atol=1e-5)


def test_a_quantized_input_shared_with_another_matmul_is_left_alone(tmp_path):
    quantized = _ffn_in(tmp_path, shared_input=True)
    dynamic_quantizations = [n for n in quantized.graph.node if n.op_type == "DynamicQuantizeLinear"]
    assert len(dynamic_quantizations) == 1  # one quantized x feeds both MatMulIntegers

    moved, count = gelu_bias_into_matmul(quantized)

    assert count == 0 and moved == quantized
