"""What every benchmark shares: the machine it ran on, interleaved timing, feeds and texts of a given length."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

Timer = Callable[[], object]


# The ISA features that pick onnxruntime's kernels: x86-64 (/proc/cpuinfo "flags") and arm64 ("Features").
ISA_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "asimddp", "i8mm", "bf16", "sve", "sve2")
# arm64's "model name" is generic where present: the core is its "CPU part" (Arm's numbers; AWS Graviton in brackets).
ARM_PARTS = {"0xd0c": "Neoverse N1 (Graviton2)", "0xd40": "Neoverse V1 (Graviton3)", "0xd4f": "Neoverse V2 (Graviton4)",
             "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd49": "Neoverse N2"}  # fmt: skip


def cpu_description(cpuinfo: str) -> tuple[str, list[str]]:
    """The CPU's name and its kernel-picking ISA features, from the text of /proc/cpuinfo (x86-64 or arm64)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    features = set((fields.get("flags") or fields.get("Features") or "").split())
    name = ARM_PARTS.get(fields.get("CPU part", "")) or fields.get("model name") or ""
    if not name and "CPU part" in fields:
        name = f"arm64 core {fields.get('CPU implementer', '?')}/{fields['CPU part']}"
    return name or "unknown", [f for f in ISA_FEATURES if f in features]


def emulation() -> str | None:
    """How this process is emulated, where it says so: QEMU user mode reads $QEMU_CPU / $QEMU_LD_PREFIX (the way
    docs/benchmarks/README.md runs the bench as arm64 on x86-64). Timings under emulation are not the CPU's."""
    if os.environ.get("QEMU_CPU") or os.environ.get("QEMU_LD_PREFIX"):
        return f"QEMU user mode, cpu {os.environ.get('QEMU_CPU') or 'max'}"
    return None


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    from functions.inference.session import available_cpus

    try:
        cpu, isa = cpu_description(Path("/proc/cpuinfo").read_text())
    except OSError:
        cpu, isa = "unknown", []
    return {
        "cpu": cpu,
        "cpus_used": available_cpus(),
        "isa": isa,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        **({"emulated": emulated} if (emulated := emulation()) else {}),
    }


def run_header(name: str, **fields: Any) -> dict[str, Any]:
    """The start of every benchmark's results: the model, this machine and when, then the bench's own fields."""
    return {"model": name, "machine": machine(), "date": datetime.now(UTC).isoformat(timespec="seconds"), **fields}


def ensure_built(name: str, fp32_relative: str, console: Console) -> tuple[Any, Path, Path]:
    """The catalog entry, its artifact dir and its fp32 model path under build/<name>/ (built first if missing)."""
    from model_build.build import artifacts_root, build_model, work_root
    from model_build.catalog import get_entry

    entry = get_entry(name)
    artifact, fp32 = artifacts_root() / name, work_root() / name / fp32_relative
    if not (artifact / "manifest.json").is_file() or not fp32.is_file():
        console.log(f"building {name} first")
        build_model(entry)
    return entry, artifact, fp32


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p99_ms": p99 * 1000, "n": len(ordered)}


def interleaved(cases: dict[str, Timer], repeats: int, warmup: int = 2) -> dict[str, dict[str, float]]:
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            started = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - started)
    return {name: percentiles(s) for name, s in samples.items()}


def text_feeds(batch: int, seq: int, vocab: int = 30522, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, vocab, size=(batch, seq), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def text_of_tokens(pipeline: Any, seq: int) -> str:
    words = ["serverless", "inference", "with", "quantized", "transformers", "on", "small", "machines"]
    text = ""
    i = 0
    while pipeline.encoder.count_tokens(text + " " + words[i % len(words)]) <= seq:
        text += " " + words[i % len(words)]
        i += 1
    return text.strip()
