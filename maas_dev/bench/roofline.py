"""A roofline reference measured in the same run: large GEMMs in ONNX Runtime at fp32 and int8.

Shapes match a BERT FFN projection at batch 32 × 128 tokens, so "model GOPS / GEMM GOPS" says how
much of what this CPU can do for such work the model achieves.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from onnx import TensorProto, helper


def _gemm_model(m: int, k: int, n: int, int8: bool) -> bytes:
    if int8:
        a = helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])
        b = helper.make_tensor(
            "b", TensorProto.INT8, [k, n], np.random.randint(-127, 127, (k, n)).astype(np.int8).tobytes(), raw=True
        )
        node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
    else:
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k])
        b = helper.make_tensor(
            "b", TensorProto.FLOAT, [k, n], np.random.randn(k, n).astype(np.float32).tobytes(), raw=True
        )
        node = helper.make_node("MatMul", ["a", "b"], ["y"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    graph = helper.make_graph([node], "gemm", [a], [y], initializer=[b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model.SerializeToString()


def gemm_gops(m: int = 4096, k: int = 384, n: int = 1536, repeats: int = 10) -> dict[str, Any]:
    import onnxruntime as ort

    from functions.inference.session import available_cpus

    results: dict[str, Any] = {"shape": [m, k, n]}
    for label, int8 in (("fp32", False), ("int8", True)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = available_cpus()
        session = ort.InferenceSession(_gemm_model(m, k, n, int8), options, providers=["CPUExecutionProvider"])
        a = np.random.randint(0, 255, (m, k)).astype(np.uint8) if int8 else np.random.randn(m, k).astype(np.float32)
        session.run(None, {"a": a})
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {"a": a})
            times.append(time.perf_counter() - started)
        results[f"{label}_gops"] = 2 * m * k * n / float(np.median(times)) / 1e9
    return results


def encoder_flops_per_token(hidden: int, layers: int, seq: int, ffn_mult: int = 4) -> float:
    """≈ 2 × non-embedding params per token (QKV, output, FFN) + attention scores and mixing."""
    dense = layers * (4 * hidden * hidden + 2 * ffn_mult * hidden * hidden)
    attention = layers * 2 * 2 * seq * hidden
    return float(2 * dense + attention)
