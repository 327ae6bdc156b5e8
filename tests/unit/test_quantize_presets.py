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


def test_blockwise_first_keeps_only_the_earliest_down_projections_blockwise(tmp_path):
    import numpy as np
    from onnx import numpy_helper

    from model_build.quantize import quantize

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for layer in range(3):  # three FFN blocks in a chain: up → Gelu → down
        for name in (f"w_up{layer}", f"w_down{layer}"):
            inits.append(numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32), name))
        nodes += [
            helper.make_node("MatMul", [x, f"w_up{layer}"], [f"up{layer}"], name=f"up{layer}"),
            helper.make_node("Gelu", [f"up{layer}"], [f"act{layer}"], domain="com.microsoft", name=f"gelu{layer}"),
            helper.make_node("MatMul", [f"act{layer}", f"w_down{layer}"], [f"y{layer}"], name=f"down{layer}"),
        ]
        x = f"y{layer}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 64])], initializer=inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    onnx.save(model, str(tmp_path / "in.onnx"))
    preset = QuantPreset("t", "dynamic", op_types=("MatMul",), blockwise_layers="ffn-output", blockwise_first=2)
    record = quantize(tmp_path / "in.onnx", tmp_path / "out.onnx", preset)
    out = onnx.load(str(tmp_path / "out.onnx"))
    blockwise = sorted(n.name.removesuffix("_Q8") for n in out.graph.node if n.op_type == "MatMulNBits")
    assert blockwise == ["down0", "down1"] and record.weight_type == "int8+int8-blockwise-ffn-output-first2"
    assert not any(n.op_type == "MatMul" and n.name == "down2" for n in out.graph.node)  # down2 went INT8


def test_every_preset_the_catalog_may_name_is_one_the_build_implements():
    """The contract lists the preset names a catalog entry may use; the build has exactly those."""
    from functions.contract.catalog import QUANTIZATION_PRESETS
    from model_build.quantize import PRESETS

    assert list(PRESETS) == list(QUANTIZATION_PRESETS)
