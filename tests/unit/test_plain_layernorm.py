"""plain_layernorm: each SkipLayerNormalization becomes standard Add/Sum + LayerNormalization, same outputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from model_build.graph.layernorm import plain_layernorm
from model_build.quantize import PRESETS

RNG = np.random.default_rng(0)
H = 16


def _skip_ln_model(*, with_bias: bool, opset: int = 18, extra_output: bool = False) -> onnx.ModelProto:
    inputs = ["a", "b", "gamma", "beta", *(["bias"] if with_bias else [])]
    outputs = ["y", "", "", "sum"] if extra_output else ["y"]
    node = helper.make_node(
        "SkipLayerNormalization", inputs, outputs, domain="com.microsoft", epsilon=1e-12, name="sln"
    )
    graph = helper.make_graph(
        [node, helper.make_node("Relu", ["y"], ["out"])],
        "g",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", H]) for x in ("a", "b")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", H])]
        + ([helper.make_tensor_value_info("sum", TensorProto.FLOAT, None)] if extra_output else []),
        initializer=[
            numpy_helper.from_array(RNG.normal(size=H).astype(np.float32), name) for name in ("gamma", "beta", "bias")
        ],
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, ir_version=10, opset_imports=opsets)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray], optimized: str | None = None) -> np.ndarray:
    options = ort.SessionOptions()
    if optimized:
        options.optimized_model_filepath = optimized
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["out"], feeds)[0])


def test_skip_layernorm_becomes_sum_and_layernorm_with_the_same_result():
    feeds = {x: RNG.normal(size=(2, 5, H)).astype(np.float32) for x in ("a", "b")}
    for with_bias in (True, False):
        model = _skip_ln_model(with_bias=with_bias)
        plain, count = plain_layernorm(model)
        assert count == 1
        ops = ["Add", "Add"] if with_bias else ["Sum"]
        assert [n.op_type for n in plain.graph.node] == [*ops, "LayerNormalization", "Relu"]
        np.testing.assert_allclose(_run(plain, feeds), _run(model, feeds), atol=1e-5)
        assert model.graph.node[0].op_type == "SkipLayerNormalization"  # the input is left as it was


def test_onnxruntime_does_not_fuse_the_rewrite_back(tmp_path):
    feeds = {x: RNG.normal(size=(2, 5, H)).astype(np.float32) for x in ("a", "b")}
    for with_bias in (True, False):
        optimized = tmp_path / f"optimized-{with_bias}.onnx"
        _run(plain_layernorm(_skip_ln_model(with_bias=with_bias))[0], feeds, str(optimized))
        assert "SkipLayerNormalization" not in {n.op_type for n in onnx.load(str(optimized)).graph.node}


def test_nodes_whose_extra_outputs_are_used_and_old_opsets_are_left_alone():
    assert plain_layernorm(_skip_ln_model(with_bias=True, extra_output=True))[1] == 0
    assert plain_layernorm(_skip_ln_model(with_bias=True, opset=16))[1] == 0


def test_plain_layernorm_presets_are_the_served_ones_plus_the_rewrite():
    for name, base in (
        ("int8-dynamic-ffn-outliers-plain-ln", "int8-dynamic-ffn-outliers"),
        ("int8-dynamic-ffn-both-outliers-plain-ln", "int8-dynamic-ffn-both-outliers"),
    ):
        preset, before = PRESETS[name], PRESETS[base]
        assert preset.plain_layernorm and not before.plain_layernorm
        assert (preset.fp32_outliers, preset.outlier_layers, preset.op_types) == (
            before.fp32_outliers,
            before.outlier_layers,
            before.op_types,
        )


def test_bias_gelu_becomes_fast_gelu_within_the_tanh_approximation():
    from model_build.graph.gelu import tanh_gelu

    graph = helper.make_graph(
        [helper.make_node("BiasGelu", ["x", "bias"], ["out"], domain="com.microsoft", name="g")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", H])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", H])],
        initializer=[numpy_helper.from_array(RNG.normal(size=H).astype(np.float32), "bias")],
    )
    model = helper.make_model(
        graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )
    fast, count = tanh_gelu(model)
    assert count == 1 and fast.graph.node[0].op_type == "FastGelu"
    feeds = {"x": RNG.normal(scale=3.0, size=(4, H)).astype(np.float32)}
    np.testing.assert_allclose(_run(fast, feeds), _run(model, feeds), atol=2e-3)


def _unfused_residual_model() -> onnx.ModelProto:
    """LayerNorm((x @ W + bias) + skip), as an export writes it before any fusion."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["proj"]),
            helper.make_node("Add", ["proj", "bias"], ["biased"]),
            helper.make_node("Add", ["biased", "skip"], ["residual"]),
            helper.make_node("LayerNormalization", ["residual", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
            helper.make_node("Relu", ["y"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", H]) for x in ("x", "skip")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", H])],
        initializer=[numpy_helper.from_array(RNG.normal(size=(H, H)).astype(np.float32), "w")]
        + [numpy_helper.from_array(RNG.normal(size=H).astype(np.float32), n) for n in ("bias", "gamma", "beta")],
    )
    return helper.make_model(
        graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    )


def test_an_unfused_residual_is_reordered_so_onnxruntime_leaves_it_unfused(tmp_path):
    # GIVEN LayerNorm((input + bias) + skip), which ORT fuses into its slow SkipLayerNormalization
    model = _unfused_residual_model()
    feeds = {x: RNG.normal(size=(2, 5, H)).astype(np.float32) for x in ("x", "skip")}
    before = tmp_path / "before.onnx"
    _run(model, feeds, str(before))
    assert "SkipLayerNormalization" in {n.op_type for n in onnx.load(str(before)).graph.node}
    # WHEN rewritten
    plain, count = plain_layernorm(model)
    # THEN the sum is (input + skip) + bias, ORT keeps the plain LayerNormalization, and the result is the same
    assert count == 1
    adds = [list(n.input) for n in plain.graph.node if n.op_type == "Add"]
    assert adds == [["proj", "skip"], ["biased", "bias"]]
    after = tmp_path / "after.onnx"
    np.testing.assert_allclose(_run(plain, feeds, str(after)), _run(model, feeds), atol=1e-5)
    assert "SkipLayerNormalization" not in {n.op_type for n in onnx.load(str(after)).graph.node}
    assert [n.op_type for n in model.graph.node][1:3] == ["Add", "Add"] and model.graph.node[1].input[1] == "bias"
