"""grid_repack: weights already on a GGUF-style block grid are stored exactly as MatMulNBits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_build.graph.grid_repack import find_grid, repack_grid_weights

RNG = np.random.default_rng(0)
K, N = 64, 48
ZERO = {"matmul_4bit": 0, "matmul_8bit": 0, "matmul_8bit_as_planes": 0, "matmul_kept_fp32": 0, "packed_groups": 0,
        "matmul_4bit_folded": 0}


def q4_1_weight() -> np.ndarray:
    """[K, N] weights as GGUF Q4_1 de-quantizes them: d·q + m per block of 32 along K."""
    q = RNG.integers(0, 16, size=(N, K // 32, 32)).astype(np.float32)
    q[..., 0], q[..., 1] = 0, 15  # ggml's quantizer always maps a block's min to 0 and max to 15
    d = RNG.uniform(0.001, 0.05, size=(N, K // 32, 1)).astype(np.float32)
    m = RNG.uniform(-0.4, 0.0, size=(N, K // 32, 1)).astype(np.float32)
    return (q * d + m).reshape(N, K).T.copy()


def q8_0_weight() -> np.ndarray:
    q = RNG.integers(-127, 128, size=(N, K // 32, 32)).astype(np.float32)
    q[..., 0] = 127
    d = RNG.uniform(0.001, 0.01, size=(N, K // 32, 1)).astype(np.float32)
    return (q * d).reshape(N, K).T.copy()


def two_matmul_model(path: Path, first: np.ndarray, second: np.ndarray) -> Path:
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["y1"], name="mm1"),
        helper.make_node("MatMul", ["x", "w2"], ["y2"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["batch", "seq", N]) for y in ("y1", "y2")],
        initializer=[numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")],
    )
    onnx.save(helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"x": x})]


def test_grids_are_recognised() -> None:
    assert find_grid(q4_1_weight()).bits == 4  # type: ignore[union-attr]
    assert find_grid(q8_0_weight()).bits == 8  # type: ignore[union-attr]
    assert find_grid(RNG.normal(size=(K, N)).astype(np.float32)) is None


@pytest.mark.parametrize("pack_siblings", [False, True])
def test_q4_1_weights_are_packed_exactly_and_shared_block_sums(tmp_path: Path, pack_siblings: bool) -> None:
    w1, w2 = q4_1_weight(), q4_1_weight()
    source = two_matmul_model(tmp_path / "in.onnx", w1, w2)
    counts = repack_grid_weights(source, tmp_path / "out.onnx", pack_siblings=pack_siblings)
    assert counts == {**ZERO, "matmul_4bit": 2, "packed_groups": int(pack_siblings)}
    ops = [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node]
    if pack_siblings:  # both read x: one MatMulNBits over 2N columns, one offset term, then Split
        assert ops.count("MatMulNBits") == 1 and ops.count("MatMul") == 2 and ops.count("Split") == 1
    else:
        assert ops.count("MatMulNBits") == 2 and ops.count("MatMul") == 3  # one block-sum shared by both
    x = RNG.normal(size=(2, 3, K)).astype(np.float32)
    for got, expected in zip(run(tmp_path / "out.onnx", x), (x @ w1, x @ w2), strict=True):
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_off_grid_weights_stay_fp32(tmp_path: Path) -> None:
    source = two_matmul_model(tmp_path / "in.onnx", q8_0_weight(), RNG.normal(size=(K, N)).astype(np.float32))
    counts = repack_grid_weights(source, tmp_path / "out.onnx", eight_bit="int8-compute")
    assert counts == {**ZERO, "matmul_8bit": 1, "matmul_kept_fp32": 1}


def test_q8_0_weights_become_two_exact_4bit_planes(tmp_path: Path) -> None:
    w1, w2 = q4_1_weight(), q8_0_weight()
    w2[:, 0] = np.tile(np.arange(-127, -95, dtype=np.float32), K // 32) * 0.01  # both ends of the int8 range
    w2[:32, 1] = np.arange(96, 128, dtype=np.float32) * 0.01
    source = two_matmul_model(tmp_path / "in.onnx", w1, w2)
    counts = repack_grid_weights(source, tmp_path / "out.onnx")
    assert counts == {**ZERO, "matmul_4bit": 1, "matmul_8bit_as_planes": 1}
    model = onnx.load(str(tmp_path / "out.onnx"))
    planes = [n for n in model.graph.node if n.op_type == "MatMulNBits" and len(n.input) == 4]
    assert len(planes) == 1  # qweight, scales and uint8 zero points (ORT's fast 4-bit path)
    attrs = {a.name: a.i for a in planes[0].attribute}
    assert attrs["K"] == 2 * K and attrs["bits"] == 4 and attrs["accuracy_level"] == 0
    x = RNG.normal(size=(2, 3, K)).astype(np.float32)
    for got, expected in zip(run(tmp_path / "out.onnx", x), (x @ w1, x @ w2), strict=True):
        assert np.abs(got - expected).max() < 1e-4


@pytest.mark.parametrize("eight_bit", ["fp32", "int8-compute"])
def test_q8_0_weights_other_storage(tmp_path: Path, eight_bit: str) -> None:
    source = two_matmul_model(tmp_path / "in.onnx", q4_1_weight(), q8_0_weight())
    counts = repack_grid_weights(source, tmp_path / "out.onnx", eight_bit=eight_bit)  # type: ignore[arg-type]
    kept = {"matmul_kept_fp32": 1} if eight_bit == "fp32" else {"matmul_8bit": 1}
    assert counts == {**ZERO, "matmul_4bit": 1, **kept}


def test_a_model_without_any_grid_is_refused(tmp_path: Path) -> None:
    w = RNG.normal(size=(K, N)).astype(np.float32)
    with pytest.raises(ValueError, match="block grid"):
        repack_grid_weights(two_matmul_model(tmp_path / "in.onnx", w, w), tmp_path / "out.onnx")
