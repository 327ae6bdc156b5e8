"""Time one MiniLM layer's attention on onnxruntime's CPU kernels against the fused prototype (attention.c).

Usage: ``.venv/bin/python docs/benchmarks/experiments/fused-attention/run.py`` (needs gcc with AVX-512 and
OpenMP, and an AVX-512 CPU). Prints a markdown table; the committed output is in README.md.

Cases, each at batch 1 and 32 x 128 tokens, rounds interleaved, 2 intra-op threads:

- ``qattention``: what the served minilm-embed runs per layer — ``DynamicQuantizeLinear`` + ``QAttention``
  (INT8 q|k|v projection, then the fp32 core: QKᵀ, mask, softmax, ·V).
- ``qkv_projection``: that INT8 q|k|v projection alone (``DynamicQuantizeMatMul`` with its bias), so
  ``qattention − qkv_projection`` is the core onnxruntime runs.
- ``onnx_attention``: the core as ONNX's own ``Attention`` (opset 23) on split q, k, v.
- ``fused``: the prototype on the projection's output.
"""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HEADS, HEAD_SIZE = 12, 32
WIDTH = HEADS * HEAD_SIZE
RNG = np.random.default_rng(0)
OPSETS = [helper.make_opsetid("", 23), helper.make_opsetid("com.microsoft", 1)]


def _session(nodes: list, inputs: list, initializers: list | None = None) -> ort.InferenceSession:
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [output], initializers or []), opset_imports=OPSETS)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _value(name: str, dtype: int, shape: list) -> object:
    return helper.make_tensor_value_info(name, dtype, shape)


def sessions() -> dict[str, ort.InferenceSession]:
    weight = RNG.integers(-127, 128, (WIDTH, 3 * WIDTH)).astype(np.int8)
    bias = RNG.normal(size=3 * WIDTH).astype(np.float32)
    x, mask = _value("x", TensorProto.FLOAT, ["b", "s", WIDTH]), _value("mask", TensorProto.INT32, ["b", "s"])
    qkv = _value("qkv", TensorProto.FLOAT, ["b", "s", 3 * WIDTH])
    float_mask = _value("float_mask", TensorProto.FLOAT, ["b", 1, "s", "s"])
    return {
        "qattention": _session(
            [
                helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
                helper.make_node(
                    "QAttention",
                    ["xq", "w", "bias", "xs", "ws", "mask", "xz", "wz"],
                    ["y"],
                    domain="com.microsoft",
                    num_heads=HEADS,
                ),
            ],
            [x, mask],
            [
                numpy_helper.from_array(weight, "w"),
                numpy_helper.from_array(bias, "bias"),
                numpy_helper.from_array(np.array(0.002, np.float32), "ws"),
                numpy_helper.from_array(np.array(0, np.int8), "wz"),
            ],
        ),
        "qkv_projection": _session(
            [helper.make_node("DynamicQuantizeMatMul", ["x", "w", "ws", "wz", "bias"], ["y"], domain="com.microsoft")],
            [x],
            [
                numpy_helper.from_array(weight, "w"),
                numpy_helper.from_array(bias, "bias"),
                numpy_helper.from_array(np.full(3 * WIDTH, 0.002, np.float32), "ws"),
                numpy_helper.from_array(np.zeros(3 * WIDTH, np.int8), "wz"),
            ],
        ),
        "onnx_attention": _session(
            [
                helper.make_node("Split", ["qkv"], ["q", "k", "v"], axis=-1, num_outputs=3),
                helper.make_node(
                    "Attention", ["q", "k", "v", "float_mask"], ["y"], q_num_heads=HEADS, kv_num_heads=HEADS
                ),
            ],
            [qkv, float_mask],
        ),
        "reference": _session(  # fp32 MultiHeadAttention with a key padding mask: the numbers to match
            [
                helper.make_node("Split", ["qkv"], ["q", "k", "v"], axis=-1, num_outputs=3),
                helper.make_node(
                    "MultiHeadAttention", ["q", "k", "v", "", "mask"], ["y"], domain="com.microsoft", num_heads=HEADS
                ),
            ],
            [qkv, mask],
        ),
    }


def prototype(build: Path) -> ctypes.CDLL:
    source = Path(__file__).with_name("attention.c")
    library = build / "libattention.so"
    subprocess.run(
        ["gcc", "-O3", "-march=x86-64-v4", "-fopenmp", "-shared", "-fPIC", str(source), "-o", str(library)], check=True
    )
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # idle OpenMP threads must not spin into ORT's runs
    lib = ctypes.CDLL(str(library))
    lib.attention.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int] * 4
    return lib


def main() -> None:
    with tempfile.TemporaryDirectory() as build:
        lib = prototype(Path(build))
        runs = sessions()
        print(f"{platform.processor() or platform.machine()}, onnxruntime {ort.__version__}, 2 threads; ms per layer "
              "(median of 9 interleaved rounds)\n")  # fmt: skip
        print("| batch × tokens | `qattention` | `qkv_projection` | ORT core (difference) | `onnx_attention` core "
              "| fused prototype core | max abs error vs ORT |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for batch, length, calls in ((1, 128, 100), (32, 128, 5)):
            x = RNG.normal(size=(batch, length, WIDTH)).astype(np.float32)
            qkv = runs["qkv_projection"].run(None, {"x": x})[0]
            mask = np.ones((batch, length), np.int64)
            mask[1::3, length - length // 4 :] = 0  # every third sequence padded by a quarter
            additive = np.where(mask[:, None, None, :] == 1, 0.0, -10000.0).astype(np.float32)
            float_mask = np.ascontiguousarray(np.broadcast_to(additive, (batch, 1, length, length)))
            out = np.empty((batch, length, WIDTH), np.float32)

            def fused(qkv: np.ndarray = qkv, mask: np.ndarray = mask, out: np.ndarray = out) -> None:
                lib.attention(qkv.ctypes.data, mask.ctypes.data, out.ctypes.data, qkv.shape[0], qkv.shape[1], HEADS, 2)

            feeds = {
                "qattention": {"x": x, "mask": mask.astype(np.int32)},
                "qkv_projection": {"x": x},
                "onnx_attention": {"qkv": qkv, "float_mask": float_mask},
            }
            cases = {name: (lambda s=runs[name], f=feed: s.run(None, f)) for name, feed in feeds.items()}
            cases["fused"] = fused
            fused()
            expected = runs["reference"].run(None, {"qkv": qkv, "mask": mask.astype(np.int32)})[0]
            error = float(np.abs(out - expected).max())
            times: dict[str, list[float]] = {name: [] for name in cases}
            for round_ in range(9):
                names = list(cases)
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    cases[name]()
                    start = time.perf_counter()
                    for _ in range(calls):
                        cases[name]()
                    times[name].append((time.perf_counter() - start) / calls * 1e3)
            med = {name: float(np.median(values)) for name, values in times.items()}
            print(f"| {batch} × {length} | {med['qattention']:.3f} | {med['qkv_projection']:.3f} | "
                  f"{med['qattention'] - med['qkv_projection']:.3f} | {med['onnx_attention']:.3f} | {med['fused']:.3f} "
                  f"| {error:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()
