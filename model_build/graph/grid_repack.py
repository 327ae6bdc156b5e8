"""Exact weight-only packing for sources whose weights already sit on a block quantization grid.

A GGUF checkpoint de-quantized to fp32 (SmolLM2's Q4_1 layers, its Q8_0 LM head) holds, in every
block of 32 input weights, values on one uniform grid. Quantizing those weights again with a generic
quantizer rounds them onto a second grid and costs quality for nothing; int8 compute
(``accuracy_level=4``) adds activation rounding on top. This pass stores each block's own grid:

- Q4_1, ``w = d·q + m`` (q ∈ 0..15): ``MatMulNBits`` 4-bit with its default zero point 8 computes
  ``d·(q − 8)``; the rest, ``(m + 8d)`` per block, is added back exactly as
  ``(A @ S) @ C`` where ``S`` [K, K/32] sums each block of the input and ``C`` [K/32, N] holds the
  per-block offsets (two MatMuls of width K/32, ~3% of the layer's work). fp32 compute
  (``accuracy_level=0``) keeps activations unrounded, so the result equals the fp32 graph to float
  rounding (ORT's fast 4-bit kernels need uint8 zero points; float zero points take a ~100× slower path).
- Q8_0, ``w = d·q`` (q ∈ −127..127), by ``eight_bit``:
  ``"nibble-planes"`` (exact, and a quarter of fp32's bytes): ``q + 127 = 16a + b`` with a, b ∈ 0..15,
  so ``w = 16d·(a − 7) + d·(b − 15)`` — two 4-bit planes with uint8 zero points 7 and 15, stored as
  one 4-bit ``MatMulNBits`` over ``K' = 2K`` fed ``Concat(A, A)``; fp32 compute, so it runs ORT's fast
  4-bit kernel and equals the fp32 graph to float rounding (SmolLM2's LM head: 113 → 28 MB read per token).
  ``"int8-compute"``: 8-bit symmetric with int8 activations (``accuracy_level=4``), rounds activations.
  ``"fp32"``: left as it is.

A MatMul whose weight fits neither grid is left in fp32 and counted. Path in → path out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK = 32
# |reconstruction − original| allowed, relative to the block's largest magnitude (float32 rounding only).
RELATIVE_TOLERANCE = 1e-5
EightBit = Literal["nibble-planes", "int8-compute", "fp32"]
# Q8_0 as two 4-bit planes: q + 127 = 16a + b; zero points 7 (a, scale 16d) and 15 (b, scale d).
HIGH_ZERO_POINT, LOW_ZERO_POINT = 7, 15


@dataclass(frozen=True)
class GridWeight:
    bits: int
    blob: np.ndarray  # uint8 [N, blocks, BLOCK * bits / 8]
    scales: np.ndarray  # float32 [N * blocks]
    offsets: np.ndarray | None  # float32 [blocks, N]: what the 4-bit kernel leaves out, per block
    zero_points: np.ndarray | None = None  # packed uint8 4-bit zero points [N · ceil(blocks / 2)]


def _fits(blocks: np.ndarray, rebuilt: np.ndarray) -> bool:
    limit = RELATIVE_TOLERANCE * np.abs(blocks).max(axis=-1, keepdims=True) + 1e-12
    return bool((np.abs(rebuilt - blocks) <= limit).all())


def find_grid(weight: np.ndarray) -> GridWeight | None:
    """``weight`` is a MatMul B [K, N]; blocks run along K. None when no exact 4/8-bit grid is found."""
    k, n = weight.shape
    if k % BLOCK:
        return None
    blocks = weight.T.reshape(n, k // BLOCK, BLOCK).astype(np.float32)
    low, high = blocks.min(-1, keepdims=True), blocks.max(-1, keepdims=True)
    step = np.where(high > low, (high - low) / 15, 1.0).astype(np.float32)
    q = np.clip(np.rint((blocks - low) / step), 0, 15)
    if _fits(blocks, q * step + low):
        q4 = q.astype(np.uint8)
        blob = q4[..., 0::2] | (q4[..., 1::2] << 4)  # element 2i in the low nibble
        offsets = (low + 8 * step)[..., 0].T.astype(np.float32)  # [blocks, N]
        return GridWeight(4, blob, step.reshape(-1), offsets)
    step = np.where(high > low, np.abs(blocks).max(-1, keepdims=True) / 127, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / step), -127, 127)
    if _fits(blocks, q * step):
        return GridWeight(8, (q + 128).astype(np.uint8), step.reshape(-1), None)
    return None


def nibble_planes(grid: GridWeight) -> GridWeight:
    """A Q8_0 grid → one 4-bit grid over K' = 2K: high-nibble blocks, then low-nibble blocks."""
    assert grid.bits == 8
    n, blocks, _ = grid.blob.shape
    u = grid.blob.astype(np.int16) - 1  # blob = q + 128, so u = q + 127 ∈ 0..254
    planes = np.concatenate([u // 16, u % 16], axis=1).astype(np.uint8)  # [N, 2·blocks, BLOCK]
    blob = planes[..., 0::2] | (planes[..., 1::2] << 4)
    d = grid.scales.reshape(n, blocks)
    scales = np.concatenate([16 * d, d], axis=1).astype(np.float32).reshape(-1)
    zero = np.concatenate(
        [np.full((n, blocks), HIGH_ZERO_POINT, np.uint8), np.full((n, blocks), LOW_ZERO_POINT, np.uint8)], axis=1
    )
    if zero.shape[1] % 2:
        zero = np.pad(zero, ((0, 0), (0, 1)))
    packed_zero = zero[:, 0::2] | (zero[:, 1::2] << 4)  # block 2j in the low nibble
    return GridWeight(4, blob, scales, None, packed_zero.reshape(-1))


FOLD_SCALES = (16, 8, 4, 2, 1)  # 8-bit steps per 4-bit step, finest first
# Which Q4_1 MatMuls ``folded`` folds: those whose input is no wider than their output (q|k|v, gate|up, the
# attention output projection). A rounded offset δ per block adds δ·Σ(block of the input): small for RMSNorm and
# attention outputs, whose block sums sit near 0, large for the down-projection's gated FFN activation, which
# keeps its exact offset terms. SmolLM2, 565 held-out positions / 8 greedy prompts vs torch: fold all 0.965 /
# 2 of 8; fold the packed groups only 0.970 / 3; this rule 0.973 / 6 (llama.cpp on the same GGUF: 0.970 / 4).
FOLD_RULE = "input width <= output width"


def fold_offsets(weight: np.ndarray) -> GridWeight | None:
    """A Q4_1 grid ``w = d·q + m`` as ONE 8-bit grid with uint8 zero points, for int8 compute: per block,
    ``q8 = α·q + c`` at scale ``d/α`` and zero point ``z`` with ``c − z = round(α·m/d)``, so the block's values
    are ``d·q + m'`` with ``|m' − m| ≤ d/(2α)`` (α = 16: 1/32 of a 4-bit step). The separate offset MatMuls
    disappear. α is the largest of ``FOLD_SCALES`` whose ``c``, ``z`` fit 0..255. None when ``weight`` is not
    on a Q4_1 grid."""
    grid = find_grid(weight)
    if grid is None or grid.bits != 4:
        return None
    k, n = weight.shape
    blocks = weight.T.reshape(n, k // BLOCK, BLOCK).astype(np.float32)
    low, high = blocks.min(-1), blocks.max(-1)
    step = np.where(high > low, (high - low) / 15, 1.0).astype(np.float32)
    q = np.clip(np.rint((blocks - low[..., None]) / step[..., None]), 0, 15)
    alpha = np.zeros_like(step)
    target = np.zeros_like(step)
    for candidate in FOLD_SCALES[::-1]:  # coarsest first, so the finest that fits wins
        t = np.rint(candidate * low / step)
        fits = (t >= -255) & (t <= 255 - 15 * candidate)
        alpha = np.where(fits, candidate, alpha)
        target = np.where(fits, t, target)
    if (alpha == 0).any():
        return None
    c = np.clip(target, 0, None)  # c − z = target, c ≥ 0, z ≥ 0
    z = c - target
    q8 = (alpha[..., None] * q + c[..., None]).astype(np.uint8)
    return GridWeight(8, q8, (step / alpha).astype(np.float32).reshape(-1), None, z.astype(np.uint8).reshape(-1))


def repack_grid_weights(
    model_in: Path,
    model_out: Path,
    *,
    eight_bit: EightBit = "nibble-planes",
    pack_siblings: bool = True,
    int8_compute: bool = False,
    folded: bool = False,
) -> dict[str, int]:
    """Replace every MatMul whose constant weight lies on a block grid with an exact ``MatMulNBits``.

    ``pack_siblings``: 4-bit MatMuls that share their input (q/k/v, gate/up) become one MatMulNBits over
    the concatenated columns, one offset term and a Split — per Llama layer 25 nodes become 18, with the
    same per-column arithmetic.
    ``eight_bit`` picks how Q8_0-grid weights (SmolLM2's LM head) are stored (see the module doc): the
    default nibble planes are exact; int8 compute rounds activations, which flips near-tied next tokens.
    ``int8_compute``: the 4-bit MatMulNBits round their activations to int8 per block (``accuracy_level=4``),
    as llama.cpp's Q4_1 x Q8_1 dot products do: faster, no longer exact.
    ``folded`` (with ``int8_compute``): Q4_1 weights as one 8-bit grid that carries each block's offset
    (``fold_offsets``; offsets rounded to 1/32 of a 4-bit step), so their offset MatMuls do not run; only where
    the input is no wider than the output (``FOLD_RULE``).
    Raises ``ValueError`` when no weight fits: the source was not block-quantized (use another preset).
    """
    model = onnx.load(str(model_in))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    counts = {"matmul_4bit": 0, "matmul_8bit": 0, "matmul_8bit_as_planes": 0, "matmul_kept_fp32": 0, "packed_groups": 0,
              "matmul_4bit_folded": 0}  # fmt: skip
    nodes: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    block_sums: dict[str, str] = {}  # input tensor → its per-block sums, shared by q/k/v and gate/up

    def add_init(array: np.ndarray, name: str) -> str:
        graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    grids: dict[str, GridWeight] = {}  # MatMul node name → the grid of its weight
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        grid = find_grid(numpy_helper.to_array(weight)) if weight is not None and len(weight.dims) == 2 else None
        if grid is not None and (grid.bits == 4 or eight_bit != "fp32"):
            grids[node.name or node.output[0]] = grid
    # 4-bit MatMuls that read the same input (q/k/v, gate/up) run as one wider MatMulNBits + Split.
    siblings: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        grid = grids.get(node.name or node.output[0])
        if grid is not None and grid.bits == 4 and pack_siblings:
            siblings.setdefault(node.input[0], []).append(node)
    groups = {id(group[0]): group for group in siblings.values() if len(group) > 1}
    in_group = {id(member) for group in groups.values() for member in group}

    for node in graph.node:
        key = node.name or node.output[0]
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        grid = grids.get(key)
        if weight is None or grid is None:
            counts["matmul_kept_fp32"] += weight is not None
            nodes.append(node)
            continue
        members = [node]
        if id(node) in in_group:
            if id(node) not in groups:
                continue  # emitted with the first member of its group
            members = groups[id(node)]
            weights = [numpy_helper.to_array(initializers[m.input[1]]) for m in members]
            grid = find_grid(np.concatenate(weights, axis=1))
            assert grid is not None and grid.bits == 4  # each column keeps its own blocks
            counts["packed_groups"] += 1
        source = node.input[0]
        widths = [int(initializers[m.input[1]].dims[1]) for m in members]
        k, n = int(weight.dims[0]), sum(widths)
        planes = grid.bits == 8 and eight_bit == "nibble-planes"
        for member in members:
            counts["matmul_8bit_as_planes" if planes else f"matmul_{grid.bits}bit"] += 1
            replaced.add(member.input[1])
        if folded and grid.bits == 4 and k <= n:  # see FOLD_RULE
            stacked = np.concatenate([numpy_helper.to_array(initializers[m.input[1]]) for m in members], axis=1)
            folded_grid = fold_offsets(stacked)
            if folded_grid is not None:
                grid = folded_grid
                counts["matmul_4bit_folded"] += len(members)
        inputs = [source]
        if planes:
            grid = nibble_planes(grid)
            doubled = f"{key}.input_twice"
            nodes.append(helper.make_node("Concat", [source, source], [doubled], name=doubled, axis=-1))
            inputs, k = [doubled], 2 * k
        base = key if len(members) == 1 else f"{key}.packed{len(members)}"
        single_out = members[0].output[0] if len(members) == 1 else f"{base}.out"
        packed_out = single_out if grid.offsets is None else f"{base}.packed"
        nodes.append(
            helper.make_node(
                "MatMulNBits",
                [*inputs, add_init(grid.blob, f"{base}.qweight"), add_init(grid.scales, f"{base}.scales")]
                + ([add_init(grid.zero_points, f"{base}.zero_points")] if grid.zero_points is not None else []),
                [packed_out],
                name=base,
                domain="com.microsoft",
                K=k,
                N=n,
                bits=grid.bits,
                block_size=BLOCK,
                accuracy_level=4 if grid.bits == 8 or int8_compute else 0,
            )
        )
        if grid.offsets is not None:
            if source not in block_sums:
                indicator = np.kron(np.eye(k // BLOCK, dtype=np.float32), np.ones((BLOCK, 1), dtype=np.float32))
                block_sums[source] = f"{base}.block_sums"
                nodes.append(
                    helper.make_node(
                        "MatMul", [source, add_init(indicator, f"{base}.block_indicator")], [block_sums[source]]
                    )
                )
            correction = f"{base}.offset_term"
            nodes.append(
                helper.make_node(
                    "MatMul", [block_sums[source], add_init(grid.offsets, f"{base}.offsets")], [correction]
                )
            )
            nodes.append(helper.make_node("Add", [packed_out, correction], [single_out], name=f"{base}.add_offsets"))
        if len(members) > 1:
            sizes = add_init(np.asarray(widths, dtype=np.int64), f"{base}.split_sizes")
            nodes.append(
                helper.make_node(
                    "Split", [single_out, sizes], [m.output[0] for m in members], name=f"{base}.split", axis=-1
                )
            )
    if not counts["matmul_4bit"] + counts["matmul_8bit"]:
        raise ValueError(f"{model_in}: no MatMul weight lies on a 4/8-bit block grid; choose another preset")
    del graph.node[:]
    graph.node.extend(nodes)
    still_used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name not in replaced or init.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # shapes of rewired tensors are re-inferred by ORT
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(model_out))
    return counts
