"""Quantization presets validate themselves; the FFN finder picks exactly the GELU-adjacent MatMuls."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from model_build.quantize import PRESETS, QuantPreset, ffn_matmuls, get_preset


def test_presets_validate_in_post_init():
    with pytest.raises(ValueError, match="bits"):
        QuantPreset("x", "weight-only", bits=3)
    with pytest.raises(ValueError, match="block_size"):
        QuantPreset("x", "weight-only", block_size=48)
    with pytest.raises(ValueError, match="unknown quantization preset"):
        get_preset("int3")
    assert PRESETS["int8-dynamic-ffn-blockwise"].record().weight_type == "int8+int8-blockwise-ffn-output"


def _ffn_graph() -> onnx.ModelProto:
    w = [helper.make_tensor(f"w{i}", TensorProto.FLOAT, [4, 4], [0.1] * 16) for i in range(3)]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["q"], name="attn_q"),
        helper.make_node("MatMul", ["q", "w1"], ["up"], name="ffn_up"),
        helper.make_node("Gelu", ["up"], ["act"], domain="com.microsoft", name="gelu"),
        helper.make_node("MatMul", ["act", "w2"], ["y"], name="ffn_down"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=w,
    )
    return helper.make_model(graph)


def test_ffn_matmul_selection():
    model = _ffn_graph()
    assert ffn_matmuls(model, include_input_projection=False) == ["ffn_down"]
    assert sorted(ffn_matmuls(model, include_input_projection=True)) == ["ffn_down", "ffn_up"]
