"""ONNX Runtime sessions sized to the CPUs this process can really use."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from functions.errors import ArtifactError

_ORT_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def available_cpus() -> int:
    """CPUs usable by this process: affinity mask, capped by a cgroup v2/v1 CPU quota (containers, Lambda)."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota_us > 0 and period_us > 0:
            return quota_us / period_us
    except (OSError, ValueError):
        pass
    return None


# MAAS_EXECUTION_PROVIDERS names → ONNX Runtime providers, in the order ORT should try them.
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(spec: str) -> list[str]:
    """``"cuda,cpu"`` → ORT provider names; refuse names this onnxruntime build cannot run, saying what to install."""
    names = [item.strip().lower() for item in spec.split(",") if item.strip()] or ["cpu"]
    unknown = [n for n in names if n not in PROVIDER_NAMES]
    if unknown:
        raise ArtifactError(
            f"MAAS_EXECUTION_PROVIDERS: unknown provider(s) {', '.join(unknown)}; "
            f"use any of {', '.join(PROVIDER_NAMES)}"
        )
    providers = [PROVIDER_NAMES[n] for n in names]
    available = set(ort.get_available_providers())
    missing = [p for p in providers if p not in available]
    if missing:
        raise ArtifactError(
            f"MAAS_EXECUTION_PROVIDERS asks for {', '.join(missing)}, but this onnxruntime offers only "
            f"{', '.join(sorted(available))}: install onnxruntime-gpu (a CUDA 12/13 build) or set "
            "MAAS_EXECUTION_PROVIDERS=cpu"
        )
    if "CPUExecutionProvider" not in providers:  # the fallback for ops an accelerator does not implement
        providers.append("CPUExecutionProvider")
    return providers


def create_session(
    model_path: Path, *, intra_op_threads: int = 0, providers: list[str] | None = None, spinning: bool = False
) -> ort.InferenceSession:
    """Create a session with explicit thread counts (never ORT's guess from the host's core count).

    Intra-op threads busy-wait between the kernels of one run: a run is hundreds of short kernels, and a
    thread that sleeps between them pays a wake-up each (MiniLM, 2 vCPUs, one 16-token sentence: ~1.0 ms
    spinning vs ~1.6 ms sleeping). ``spinning`` says whether they also keep spinning *after* a run: off for
    encoders (one run per request; ``session.force_spinning_stop`` parks them as the run returns, so they
    take no CPU from tokenization, pooling and the response), on for autoregressive decoders, whose hundreds
    of back-to-back runs per request otherwise pay a wake-up each (SmolLM2 on 2 vCPUs: 54.5 vs 42.2 decode
    tokens/s)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads or available_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    if not spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    chosen = providers or ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=chosen)
    check_active(session, chosen)
    return session


class ProviderInactiveError(ArtifactError):
    """A requested accelerator is not active in the session: ONNX Runtime fell back to the CPU."""

    code = "execution_provider_inactive"


def check_active(session: ort.InferenceSession, requested: list[str]) -> None:
    """Refuse a session that silently dropped the accelerator it was asked for.

    onnxruntime-gpu logs "Failed to create CUDAExecutionProvider" and carries on with the CPU when the CUDA or
    cuDNN libraries (or a recent enough driver) are missing; a GPU task would then serve at GPU prices on CPU
    speed while saying it is ready. The first requested provider is the one the model was deployed for.
    """
    active = session.get_providers()
    if requested and requested[0] not in active:
        raise ProviderInactiveError(
            f"{requested[0]} was requested but the session runs on {', '.join(active)} only: ONNX Runtime could "
            "not create it (for CUDA: the NVIDIA driver, CUDA and cuDNN libraries must match this onnxruntime-gpu; "
            "the process log has ORT's reason). Refusing to serve on a fallback"
        )


def input_dtypes(session: ort.InferenceSession) -> dict[str, type[np.generic]]:
    return {i.name: _ORT_TO_NUMPY.get(i.type, np.float32) for i in session.get_inputs()}
