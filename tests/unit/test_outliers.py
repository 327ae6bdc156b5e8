"""Outlier channels in fp32: found on calibration inputs, split out exactly, and they rescue INT8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_build.graph.outliers import channel_maxima, pick_outliers, split_outliers
from model_build.quantize import get_preset, quantize

RNG = np.random.default_rng(7)
K, N = 64, 32
HOT = [5, 40]  # input channels that run ~20x hotter than the rest


def ffn_down_model() -> onnx.ModelProto:
    """x → Gelu → MatMul(w): the shape of an FFN down-projection, so the quantizer's finder selects it."""
    weight = RNG.normal(scale=0.2, size=(K, N)).astype(np.float32)
    nodes = [
        helper.make_node("Gelu", ["x"], ["act"], domain="com.microsoft", name="gelu"),
        helper.make_node("MatMul", ["act", "w"], ["y"], name="down"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", N])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def batch(rows: int = 4, seq: int = 16, *, hot_padding: bool = False) -> dict[str, np.ndarray]:
    x = RNG.normal(size=(rows, seq, K)).astype(np.float32)
    x[..., HOT] *= 20
    mask = np.ones((rows, seq), dtype=np.int64)
    mask[0, seq // 2 :] = 0
    if hot_padding:  # padding never counts: make it huge to prove it
        x[0, seq // 2 :, 7] = 1e4
    return {"x": x, "attention_mask": mask}


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": feeds["x"]})[0])


def test_hot_channels_are_found_on_real_tokens_only() -> None:
    maxima = channel_maxima(ffn_down_model(), ["down"], [batch(hot_padding=True), batch()])
    assert maxima["down"].shape == (K,)
    assert pick_outliers(maxima)["down"].tolist() == HOT  # not channel 7, whose 1e4 sits in padding


def test_split_is_exact_in_fp32_and_names_the_fp32_matmuls() -> None:
    model = ffn_down_model()
    split, kept = split_outliers(model, {"down": np.asarray(HOT, dtype=np.int64)})
    assert kept == ["down.outliers"]
    assert [n.name for n in split.graph.node if n.op_type == "MatMul"] == ["down.outliers", "down"]
    feeds = batch()
    assert np.abs(run(split, feeds) - run(model, feeds)).max() < 1e-4


def test_the_preset_needs_calibration_and_beats_plain_int8(tmp_path: Path) -> None:
    source = tmp_path / "fp32.onnx"
    onnx.save(ffn_down_model(), str(source))
    with pytest.raises(ValueError, match="calibration"):
        quantize(source, tmp_path / "x.onnx", get_preset("int8-dynamic-ffn-outliers"))
    calibration = [batch(hot_padding=True) for _ in range(2)]
    quantize(source, tmp_path / "split.onnx", get_preset("int8-dynamic-ffn-outliers"), calibration)
    quantize(source, tmp_path / "plain.onnx", get_preset("int8-dynamic-matmul-per-channel"))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "split.onnx")).graph.node]
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # the inliers still run INT8
    assert not (tmp_path / "split.outliers-split.onnx").exists()  # the intermediate graph is cleaned up
    feeds = batch()
    reference = run(source, feeds)
    split_error = np.abs(run(tmp_path / "split.onnx", feeds) - reference).mean()
    plain_error = np.abs(run(tmp_path / "plain.onnx", feeds) - reference).mean()
    assert split_error < plain_error / 4
