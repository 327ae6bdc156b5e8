"""int4-source-grid-int8-compute: the GGUF's grids kept, every MatMulNBits computing with int8 activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from model_build.graph.grid_repack import repack_grid_weights
from model_build.quantize import PRESETS
from tests.unit.test_generation_grid_repack import RNG, K, q4_1_weight, q8_0_weight, two_matmul_model


def _levels(path: Path) -> list[int]:
    return [
        int(helper.get_attribute_value(a))
        for n in onnx.load(str(path)).graph.node
        if n.op_type == "MatMulNBits"
        for a in n.attribute
        if a.name == "accuracy_level"
    ]


def test_int8_compute_sets_accuracy_level_4_and_stays_close(tmp_path: Path) -> None:
    source = two_matmul_model(tmp_path / "in.onnx", q4_1_weight(), q8_0_weight())
    exact, fast = tmp_path / "exact.onnx", tmp_path / "fast.onnx"
    repack_grid_weights(source, exact, eight_bit="int8-compute", pack_siblings=False)
    repack_grid_weights(source, fast, eight_bit="int8-compute", pack_siblings=False, int8_compute=True)
    assert _levels(exact) == [0, 4]  # 4-bit layer fp32 compute, 8-bit head int8 compute
    assert _levels(fast) == [4, 4]
    x = RNG.normal(size=(1, 3, K)).astype(np.float32)
    run = {
        p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x}) for p in (exact, fast)
    }
    for a, b in zip(run[exact], run[fast], strict=True):
        np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05 * float(np.abs(a).max()))


def test_the_preset_names_its_compute():
    preset = PRESETS["int4-source-grid-int8-compute"]
    assert preset.source_grid and preset.grid_int8_compute and preset.eight_bit_grid == "int8-compute"
    assert not PRESETS["int4-source-grid"].grid_int8_compute


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_folded_offsets_are_one_8bit_grid_within_a_32nd_of_a_step() -> None:
    from model_build.graph.grid_repack import BLOCK, fold_offsets

    weight = q4_1_weight()
    grid = fold_offsets(weight)
    assert grid is not None and grid.bits == 8 and grid.offsets is None and grid.zero_points is not None
    n, blocks, _ = grid.blob.shape
    scale = grid.scales.reshape(n, blocks, 1)
    rebuilt = (scale * (grid.blob.astype(np.float32) - grid.zero_points.reshape(n, blocks, 1))).reshape(n, -1).T
    original = weight.T.reshape(n, blocks, BLOCK)
    step = (original.max(-1) - original.min(-1)) / 15
    error = np.abs(rebuilt - weight).T.reshape(n, blocks, BLOCK).max(-1)
    centred = original.min(-1) / step >= -15  # a block whose range holds zero, as trained weights' blocks do
    assert centred.any() and (~centred).any()
    assert (error[centred] <= step[centred] / 32 + 1e-6).all()  # α = 16: within 1/32 of the 4-bit step
    assert (error <= step / 2 + 1e-6).all()  # far-off blocks take a coarser α, never worse than half a step
    assert fold_offsets(RNG.normal(size=(K, 8)).astype(np.float32)) is None  # not a Q4_1 grid


def test_folded_preset_runs_no_offset_matmuls_and_stays_close(tmp_path: Path) -> None:
    source = two_matmul_model(tmp_path / "in.onnx", q4_1_weight(), q4_1_weight())
    offsets, folded = tmp_path / "offsets.onnx", tmp_path / "folded.onnx"
    repack_grid_weights(source, offsets, eight_bit="int8-compute", int8_compute=True)
    counts = repack_grid_weights(source, folded, eight_bit="int8-compute", int8_compute=True, folded=True)
    assert counts["matmul_4bit_folded"] == 2
    assert "MatMul" in _ops(offsets) and "MatMul" not in _ops(folded) and "Add" not in _ops(folded)
    assert _levels(folded) == [4]  # the two siblings packed into one 8-bit MatMulNBits, int8 compute
    x = RNG.normal(size=(1, 3, K)).astype(np.float32)
    run = {p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})
           for p in (source, offsets, folded)}  # fmt: skip
    for exact, got in zip(run[source], run[folded], strict=True):
        np.testing.assert_allclose(got, exact, rtol=0.05, atol=0.05 * float(np.abs(exact).max()))
    assert PRESETS["int4-source-grid-int8-folded"].grid_folded_offsets


def test_a_matmul_whose_input_is_wider_than_its_output_keeps_its_exact_offsets(tmp_path: Path) -> None:
    # GIVEN a down-projection-like MatMul (K = 64 inputs, 16 outputs) beside nothing else
    weight = q4_1_weight()[:, :16].copy()
    source = two_matmul_model(tmp_path / "in.onnx", weight, weight)
    counts = repack_grid_weights(source, tmp_path / "out.onnx", eight_bit="int8-compute", int8_compute=True,
                                 folded=True, pack_siblings=False)  # fmt: skip
    # THEN neither is folded: their block offsets stay the exact offset MatMuls
    assert counts["matmul_4bit_folded"] == 0 and counts["matmul_4bit"] == 2
    assert "MatMul" in _ops(tmp_path / "out.onnx")
