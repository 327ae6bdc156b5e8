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
