"""Quantization presets: small validated dataclasses, path in → path out.

Measured on all-MiniLM-L6-v2 (300 held-out sentences, this repo's build): dynamic INT8 per-channel on
every MatMul + the embedding table gives mean cosine 0.992 / min 0.980 vs torch at 25% of the fp32
size. The FFN down-projections (after GELU, where activations have outliers) lose the most to
per-tensor activation scales; quantizing just those six as 8-bit block-wise weight-only MatMulNBits
(activations quantized per 32-element block at run time) gives 0.995 / 0.990 at the same size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from functions.contract import Quantization

# Activation producers that mark a MatMul as an FFN down-projection (optimizer-fused or not).
_GELU_OPS = {"Gelu", "BiasGelu", "FastGelu", "QuickGelu"}


@dataclass(frozen=True)
class QuantPreset:
    name: str
    method: Literal["none", "dynamic", "fp16", "weight-only", "static"]
    per_channel: bool = True
    # Attention only exists in fused graphs (model_build.graph.fused_bert); it becomes QAttention.
    op_types: tuple[str, ...] = ("MatMul", "Attention", "Gather", "EmbedLayerNormalization")
    # MatMuls kept out of dynamic INT8 and stored as 8-bit block-wise weight-only instead:
    # "ffn-output" = the FFN down-projections, "ffn" = both FFN projections.
    blockwise_layers: Literal["none", "ffn-output", "ffn"] = "none"
    # Only the first N such layers (0 = all): GELU outliers are worst early in BERT-style encoders.
    blockwise_first: int = 0
    block_size: int = 32
    bits: int = 8
    description: str = ""
    extra_ops: tuple[str, ...] = field(default_factory=tuple)
    # Static (calibrated) INT8 only: how activation ranges are estimated from the calibration batches.
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    reduce_range: bool = False  # 7-bit weights: avoids U8S8 saturation on x86 without VNNI, costs accuracy
    # Weight-only, exact: keep the block grid the source was already quantized on (GGUF Q4_1/Q8_0), see
    # model_build/graph/grid_repack.py, instead of rounding the weights onto a new one.
    source_grid: bool = False
    # With source_grid, how Q8_0-grid weights (SmolLM2's tied LM head) are stored: "nibble-planes" (exact,
    # a quarter of the fp32 bytes read per token), "int8-compute" (rounds the head's activations) or "fp32".
    eight_bit_grid: Literal["nibble-planes", "int8-compute", "fp32"] = "nibble-planes"
    # With source_grid: the 4-bit layers' activations rounded to int8 per block of 32 (accuracy_level=4), as
    # llama.cpp computes Q4_1 x Q8_1; not exact (next-token agreement with torch drops to llama.cpp's own).
    grid_int8_compute: bool = False
    # With grid_int8_compute: each Q4_1 weight as one 8-bit grid carrying its block offset (no offset MatMuls;
    # offsets rounded to 1/32 of a 4-bit step), model_build/graph/grid_repack.fold_offsets.
    grid_folded_offsets: bool = False
    # Dynamic INT8: the FFN down-projections' outlier input channels (found on calibration inputs) run as
    # a small fp32 MatMul beside the INT8 one (model_build/graph/outliers.py); needs calibration batches.
    fp32_outliers: bool = False
    outlier_ratio: float = 3.0
    # Which MatMuls get the split: "ffn-output" (down-projections) or "ffn" (both FFN projections).
    outlier_layers: Literal["ffn-output", "ffn"] = "ffn-output"
    # Dynamic INT8: every SkipLayerNormalization written back as Add + LayerNormalization (standard ops), whose
    # CPU kernels were ~5x faster than ORT's fused one on issue 17's host (model_build/graph/layernorm.py).
    plain_layernorm: bool = False
    # Dynamic INT8: each BiasGelu (erf) as FastGelu (tanh approximation), ~3x faster on the same host; not exact
    # (model_build/graph/gelu.py). After quantization each FastGelu's bias moves into its quantized MatMul.
    tanh_gelu: bool = False

    def __post_init__(self) -> None:
        if self.method == "dynamic" and not self.op_types:
            raise ValueError(f"preset {self.name}: dynamic quantization needs op_types")
        if self.bits not in (4, 8):
            raise ValueError(f"preset {self.name}: bits must be 4 or 8")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ValueError(f"preset {self.name}: block_size must be a power of two ≥ 16")

    def record(self) -> Quantization:
        ops = list(self.op_types) if self.method in ("dynamic", "weight-only") else []
        weight = {"none": "fp32", "fp16": "fp16", "dynamic": "int8", "weight-only": f"int{self.bits}", "static": "int8"}
        return Quantization(
            preset=self.name,
            method=self.method,
            weight_type=weight[self.method]
            + ("" if self.blockwise_layers == "none" else f"+int8-blockwise-{self.blockwise_layers}")
            + (f"-first{self.blockwise_first}" if self.blockwise_first else "")
            + (f"+fp32-outlier-channels-{self.outlier_layers}" if self.fp32_outliers else ""),
            per_channel=self.per_channel and self.method in ("dynamic", "static"),
            op_types=ops,
        )


PRESETS: dict[str, QuantPreset] = {
    p.name: p
    for p in (
        QuantPreset("fp32", "none", description="no quantization (the optimized fp32 graph)"),
        QuantPreset("fp16", "fp16", description="fp16 weights and compute for the CUDA provider; fp32 I/O"),
        QuantPreset(
            "int8-dynamic-matmul-per-channel",
            "dynamic",
            description="dynamic INT8, per-channel weights, MatMul + embedding Gather",
        ),
        QuantPreset(
            "int8-dynamic-ffn-outliers",
            "dynamic",
            fp32_outliers=True,
            description="dynamic INT8 per-channel on every MatMul; the FFN down-projections' outlier input "
            "channels (calibrated) in fp32",
        ),
        QuantPreset(
            "int8-dynamic-ffn-both-outliers",
            "dynamic",
            fp32_outliers=True,
            outlier_layers="ffn",
            description="dynamic INT8 per-channel on every MatMul; both FFN projections' outlier input channels "
            "(calibrated) in fp32",
        ),
        QuantPreset(
            "int8-dynamic-ffn-outliers-plain-ln",
            "dynamic",
            fp32_outliers=True,
            plain_layernorm=True,
            description="int8-dynamic-ffn-outliers with each SkipLayerNormalization as Add + LayerNormalization",
        ),
        QuantPreset(
            "int8-dynamic-ffn-both-outliers-plain-ln",
            "dynamic",
            fp32_outliers=True,
            outlier_layers="ffn",
            plain_layernorm=True,
            description="int8-dynamic-ffn-both-outliers with each SkipLayerNormalization as Add + LayerNormalization",
        ),
        QuantPreset(
            "int8-dynamic-ffn-outliers-plain-ln-tanh-gelu",
            "dynamic",
            fp32_outliers=True,
            plain_layernorm=True,
            tanh_gelu=True,
            description="int8-dynamic-ffn-outliers-plain-ln with each BiasGelu as FastGelu (tanh approximation)",
        ),
        QuantPreset(
            "int8-dynamic-ffn-both-outliers-plain-ln-tanh-gelu",
            "dynamic",
            fp32_outliers=True,
            outlier_layers="ffn",
            plain_layernorm=True,
            tanh_gelu=True,
            description="int8-dynamic-ffn-both-outliers-plain-ln with each BiasGelu as FastGelu (tanh approximation)",
        ),
        QuantPreset(
            "int8-dynamic-ffn-blockwise",
            "dynamic",
            blockwise_layers="ffn-output",
            description="dynamic INT8 per-channel; FFN down-projections as 8-bit block-wise",
        ),
        QuantPreset(
            "int8-dynamic-early-ffn-blockwise",
            "dynamic",
            blockwise_layers="ffn-output",
            blockwise_first=3,
            description="dynamic INT8 per-channel; the first three FFN down-projections as 8-bit block-wise",
        ),
        QuantPreset(
            "int8-dynamic-early-ffn-both-blockwise",
            "dynamic",
            blockwise_layers="ffn",
            blockwise_first=3,
            description="dynamic INT8 per-channel; both FFN projections of the first three layers as 8-bit block-wise",
        ),
        QuantPreset(
            "int8-dynamic-ffn-both-blockwise",
            "dynamic",
            blockwise_layers="ffn",
            description="dynamic INT8 per-channel; both FFN projections as 8-bit block-wise (best quality)",
        ),
        QuantPreset(
            "int8-static-qdq-per-channel",
            "static",
            description="static INT8 (QDQ): per-channel weights, activation ranges (min/max) from calibration images",
        ),
        QuantPreset(
            "int4-weight-only",
            "weight-only",
            bits=4,
            op_types=("MatMul",),
            description="4-bit block-wise weight-only MatMulNBits (for memory-bound decoders)",
        ),
        QuantPreset(
            "int8-weight-only",
            "weight-only",
            bits=8,
            op_types=("MatMul",),
            description="8-bit block-wise weight-only MatMulNBits, int8 compute (SmolLM2: int4 costs 40% top-1)",
        ),
        *(
            QuantPreset(name, "weight-only", bits=4, op_types=("MatMul",), source_grid=True, eight_bit_grid=head,
                        description=description)
            for name, head, description in (
                ("int4-source-grid", "nibble-planes", "GGUF Q4_1 weights re-packed exactly as 4-bit MatMulNBits "
                 "(fp32 compute); Q8_0 weights exactly as two 4-bit planes"),
                ("int4-source-grid-fp32-head", "fp32", "int4-source-grid with the Q8_0 LM head kept fp32 (4x its "
                 "bytes per token)"),
                ("int4-source-grid-int8-head", "int8-compute", "int4-source-grid, plus the Q8_0 LM head packed as "
                 "8-bit MatMulNBits (int8 compute)"),
            )
        ),
        QuantPreset(
            "int4-source-grid-int8-compute",
            "weight-only",
            bits=4,
            op_types=("MatMul",),
            source_grid=True,
            eight_bit_grid="int8-compute",
            grid_int8_compute=True,
            description="the GGUF's own grids, computed as llama.cpp does: 4-bit layers and the 8-bit LM head with "
            "activations rounded to int8 per block of 32",
        ),
        QuantPreset(
            "int4-source-grid-int8-folded",
            "weight-only",
            bits=4,
            op_types=("MatMul",),
            source_grid=True,
            eight_bit_grid="int8-compute",
            grid_int8_compute=True,
            grid_folded_offsets=True,
            description="int4-source-grid-int8-compute with each Q4_1 block's offset folded into one 8-bit grid "
            "(no offset MatMuls; offsets within 1/32 of a 4-bit step)",
        ),
    )
}


def get_preset(name: str) -> QuantPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown quantization preset {name!r}; choose one of {', '.join(PRESETS)}") from None


def ffn_matmuls(model: onnx.ModelProto, *, include_input_projection: bool) -> list[str]:
    """Weight MatMuls around a GELU: the FFN projections, the layers most hurt by INT8 activations.

    A down-projection is fed by the GELU; an up-projection feeds it (directly or through its bias Add).
    """
    weights = {i.name for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        producer = producers.get(node.input[0])
        if producer is not None and (
            producer.op_type in _GELU_OPS or (producer.op_type == "Mul" and _after_erf(producer, producers))
        ):
            names.append(node.name)
        elif include_input_projection:
            after = consumers.get(node.output[0], [])
            after += [c for a in after if a.op_type == "Add" for c in consumers.get(a.output[0], [])]
            if any(a.op_type in _GELU_OPS for a in after):
                names.append(node.name)
    return names


def _after_erf(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> bool:
    """Unfused GELU ends in Mul(x, 0.5 * (1 + erf(x / sqrt2))): look two steps up for the Erf."""
    frontier = [producers.get(i) for i in node.input]
    for _ in range(3):
        if any(n is not None and n.op_type == "Erf" for n in frontier):
            return True
        frontier = [producers.get(i) for n in frontier if n is not None for i in n.input]
    return False


def quantize(
    model_in: Path, model_out: Path, preset: QuantPreset, calibration: Iterable[dict[str, np.ndarray]] | None = None
) -> Quantization:
    """Quantize ``model_in`` into ``model_out``. ``calibration``: input batches (feeds), for presets that
    measure activations (``fp32_outliers``); static INT8 goes through ``quantize_static`` instead."""
    logging.getLogger("root").setLevel(logging.ERROR)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    if preset.method == "none":
        model_out.write_bytes(model_in.read_bytes())
    elif preset.method == "fp16":
        _fp16(model_in, model_out)
    elif preset.source_grid:
        from model_build.graph.grid_repack import repack_grid_weights

        repack_grid_weights(
            model_in,
            model_out,
            eight_bit=preset.eight_bit_grid,
            int8_compute=preset.grid_int8_compute,
            folded=preset.grid_folded_offsets,
        )
    elif preset.method == "weight-only":
        _blockwise(onnx.load(str(model_in)), model_out, preset, nodes=None)
    elif preset.method == "static":
        raise ValueError(f"preset {preset.name} is static INT8: it needs calibration data, use quantize_static()")
    else:
        _dynamic(model_in, model_out, preset, calibration)
    return preset.record()


def _dynamic(
    model_in: Path, model_out: Path, preset: QuantPreset, calibration: Iterable[dict[str, np.ndarray]] | None
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept_fp32: list[str] = []
    rewritten = preset.fp32_outliers or preset.plain_layernorm or preset.tanh_gelu
    if rewritten:
        model = onnx.load(str(model_in))
    if preset.plain_layernorm:
        from model_build.graph.layernorm import plain_layernorm

        model, _ = plain_layernorm(model)
    if preset.tanh_gelu:
        from model_build.graph.gelu import tanh_gelu

        model, _ = tanh_gelu(model)
    if preset.fp32_outliers:
        if calibration is None:
            raise ValueError(f"preset {preset.name} finds outlier channels on calibration inputs: pass calibration=")
        from model_build.graph.outliers import channel_maxima, pick_outliers, split_outliers

        targets = ffn_matmuls(model, include_input_projection=preset.outlier_layers == "ffn")
        outliers = pick_outliers(channel_maxima(model, targets, calibration), preset.outlier_ratio)
        model, kept_fp32 = split_outliers(model, outliers)
    if rewritten:
        model_in = model_out.with_name(model_out.stem + ".rewritten.onnx")
        onnx.save(model, str(model_in))
    excluded = (
        ffn_matmuls(onnx.load(str(model_in)), include_input_projection=preset.blockwise_layers == "ffn")
        if preset.blockwise_layers != "none"
        else []
    )
    if preset.blockwise_first:  # graph order is layer order; "ffn" lists a layer's two projections together
        per_layer = 2 if preset.blockwise_layers == "ffn" else 1
        excluded = excluded[: preset.blockwise_first * per_layer]
    quantize_dynamic(
        str(model_in),
        str(model_out),
        per_channel=preset.per_channel,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(preset.op_types),
        nodes_to_exclude=excluded + kept_fp32,
        extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    if rewritten:
        model_in.unlink()  # the rewritten intermediate
    if preset.tanh_gelu:  # each FastGelu's bias moves into its quantized MatMul (model_build/graph/gelu.py)
        from model_build.graph.gelu import gelu_bias_into_matmul

        onnx.save(gelu_bias_into_matmul(onnx.load(str(model_out)))[0], str(model_out))
    if excluded:
        _blockwise(onnx.load(str(model_out)), model_out, preset, nodes=excluded)


def _blockwise(model: onnx.ModelProto, model_out: Path, preset: QuantPreset, nodes: list[str] | None) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=preset.bits if nodes is None else 8,
        block_size=preset.block_size,
        is_symmetric=True,
        accuracy_level=4,  # int8 compute with per-block activation scales
        nodes_to_include=nodes,
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(model_out), False)


def _fp16(model_in: Path, model_out: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(model_in)), keep_io_types=True)
    onnx.save(model, str(model_out))


def quantize_static(model_in: Path, model_out: Path, preset: QuantPreset, calibration: object) -> Quantization:
    """Static INT8 in QDQ format: activation ranges measured on real inputs, weights per channel.

    ``calibration`` is an ORT ``CalibrationDataReader`` (``get_next()`` returns feeds, then None); it
    should preprocess its inputs with the runtime's own code so the ranges match what is served. A reader
    that also has ``__len__`` and ``set_range(start_index, end_index)`` is calibrated one batch at a time
    (ranges merged batch by batch), so memory holds one batch's activations instead of all of them.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if preset.method != "static":
        raise ValueError(f"preset {preset.name} is not static INT8")
    logging.getLogger("root").setLevel(logging.ERROR)
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    ort_quantize_static(
        str(model_in),
        str(model_out),
        calibration,  # type: ignore[arg-type]
        quant_format=QuantFormat.QDQ,
        per_channel=preset.per_channel,
        reduce_range=preset.reduce_range,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=methods[preset.calibration],
        # Not CalibMaxIntermediateOutputs: ORT 1.31 discards (does not merge) the batches it flushes.
        extra_options={"CalibStridedMinMax": 1} if hasattr(calibration, "set_range") else {},
    )
    return preset.record()
