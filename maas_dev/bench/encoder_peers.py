"""`maas bench <encoder> --peers`: maas against what users would pick instead, each case in its own process.

Embeddings (minilm-embed) and the intent classifier (the same MiniLM encoder + a linear head) are compared on
four workloads — batch 1 and 32, of 128-token texts and of real sentences — and on quality: each case's
outputs on the build's own held-out set against torch fp32 (cosine of the embeddings; top-1 agreement of
the classifier), the same measure as the build's gates.

The classifier's peers run sentence-transformers' exports of the *encoder* with the classifier's linear head
applied to their pooled vectors in numpy: the head is 157 × 384 multiply-adds, so the comparison is the
encoder's, and each peer's top-1 agreement shows what its INT8 does to the head's decision.

Peers that are not installed are skipped with a line that says how to provide them (see
``docs/benchmarks/README.md``, "Peers").
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from maas_dev.bench.common import run_header
from maas_dev.bench.peer_process import (
    PeerCase,
    PeerProcess,
    alternate_rounds,
    is_maas,
    load_average,
    maas_variants,
    paired_ratio,
    start_all,
    summarise,
)

WORKLOADS = ("b1_128", "b32_128", "b1_real", "b32_real")
REPEATS = {"b1_128": 20, "b32_128": 3, "b1_real": 32, "b32_real": 6}
DEFAULT_EXPORTS = Path("build/peers/minilm")
EXPORT_HINT = (
    "make them with `$MAAS_PEER_PYTHON maas_dev/bench/peer_exports.py <all-MiniLM-L6-v2 folder> {exports}` "
    "or point MAAS_PEER_EXPORTS at such a folder"
)


def int8_config_for_host(machine: str | None = None, flags: str | None = None) -> tuple[str | None, str]:
    """optimum's dynamic INT8 config meant for this CPU (``arm64``, ``avx512_vnni``, ``avx512``, ``avx2``), and
    why; None where none applies."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64", "arm64 host: optimum's arm64 config (the x86 ones do not apply)"
    if machine not in ("x86_64", "amd64"):
        return None, f"no optimum INT8 config for {machine}"
    if flags is None:
        cpuinfo = Path("/proc/cpuinfo")
        flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    for config, flag in (("avx512_vnni", "avx512_vnni"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if f" {flag}" in flags:
            return config, f"x86-64 with {flag}: optimum's {config} config"
    return None, "x86-64 without AVX2: no optimum INT8 config applies"


def encoder_cases(
    entry_name: str,
    artifact: Path,
    exports: Path,
    peer_python: str,
    head: Path | None,
    workloads: dict[str, Any],
    original: Path,
) -> list[PeerCase]:
    """Every case, in report order; those that cannot run here carry their skip reason."""
    import json

    worker = "maas_dev.bench.encoder_worker"
    common = {"workloads": workloads, "head": str(head) if head else None}
    hint = EXPORT_HINT.format(exports=exports)
    files: dict[str, str] = {}
    if (exports / "peer_exports.json").is_file():
        files = json.loads((exports / "peer_exports.json").read_text())
    missing = None if files else f"no peer exports in {exports}: {hint}"
    tokenizer = str(exports / "tokenizer.json")

    def ort_case(name: str, label: str, key: str) -> PeerCase:
        spec = {"kind": "ort", "model": str(exports / files.get(key, f"<{key}>")), "tokenizer": tokenizer,
                "how": hint, **common}  # fmt: skip
        return PeerCase(name, label, sys.executable, worker, spec, skip=missing)

    config, why = int8_config_for_host()
    cases = [
        PeerCase("torch_sentence_transformers", "sentence-transformers, torch eager fp32", peer_python, worker,
                 {"kind": "sentence-transformers", "model_dir": str(original), **common}),
        PeerCase("fastembed_fp32", "fastembed (its recipe: the fp32 ONNX, onnxruntime defaults)", peer_python,
                 worker, {"kind": "fastembed", "model_dir": str(exports / "fastembed"), "how": hint,
                          "model_name": "sentence-transformers/all-MiniLM-L6-v2", **common}, skip=missing),
        ort_case("st_onnx_fp32", "sentence-transformers ONNX export, fp32", "fp32"),
        ort_case("st_onnx_O3", "sentence-transformers `export_optimized_onnx_model(…, \"O3\")`", "O3"),
    ]  # fmt: skip
    if config is None:
        cases.append(PeerCase("st_onnx_int8", "sentence-transformers dynamic INT8", sys.executable, worker, {},
                              skip=why))  # fmt: skip
    else:
        cases.append(
            ort_case(
                f"st_onnx_int8_{config}",
                f'sentence-transformers `export_dynamic_quantized_onnx_model(…, "{config}")` ({why})',
                f"int8-{config}",
            )
        )
    cases.append(PeerCase("maas", f"maas {entry_name} (served artifact)", sys.executable, worker,
                          {"kind": "maas", "artifact": str(artifact), **common}))  # fmt: skip
    for name, path in maas_variants().items():
        cases.append(PeerCase(name, f"maas, another build: {path}", sys.executable, worker,
                              {"kind": "maas", "artifact": path, **common}))  # fmt: skip
    return cases


def workload_texts(encoder: Any, real: list[str], seq: int = 128) -> dict[str, list[list[str]]]:
    """The calls of each workload: texts of exactly ``seq`` tokens (real sentences run together) and real
    sentences as they are; batch 1 cycles through 32 of them."""
    long_texts = []
    for start in range(32):
        words: list[str] = []
        for sentence in real[start:] + real[:start]:
            for word in sentence.split():
                if encoder.count_tokens(" ".join([*words, word])) > seq:
                    break
                words.append(word)
            else:
                continue
            break
        while encoder.count_tokens(" ".join(words)) < seq:
            words.append("a")
        long_texts.append(" ".join(words))
    sentences = real[:32]
    return {
        "b1_128": [[t] for t in long_texts],
        "b32_128": [long_texts],
        "b1_real": [[s] for s in sentences],
        "b32_real": [sentences],
    }


def run_encoder_peers(name: str, *, rounds: int, out_dir: Path, console: Console) -> Path:
    import torch

    from functions.contract import Task
    from functions.inference.loader import verify_artifact
    from functions.inference.registry import pipeline_for
    from functions.inference.session import available_cpus
    from maas_dev.bench.common import ensure_built
    from maas_dev.bench.peer_report import write_encoder_peers_report
    from model_build import validate
    from model_build.catalog import REPO_ROOT
    from model_build.sources import load_source
    from model_build.sources.minilm import minilm_dir

    load = {"start": load_average()}
    entry, artifact, _ = ensure_built(name, "fp32/model.onnx", console)
    torch.set_num_threads(available_cpus())
    pipeline = pipeline_for(artifact, verify_artifact(artifact), warmup=False)
    source = load_source(entry.source, task=entry.task)
    heldout = validate.heldout_texts(entry.task)
    reference = validate.torch_outputs(source, pipeline, heldout)
    real = validate.heldout_texts(Task.SENTENCE_EMBEDDINGS)
    workloads = workload_texts(pipeline.encoder, real)
    exports = Path(os.environ.get("MAAS_PEER_EXPORTS", REPO_ROOT / DEFAULT_EXPORTS))
    peer_python = os.environ.get("MAAS_PEER_PYTHON", sys.executable)
    scratch = Path(tempfile.mkdtemp(prefix="maas-peers-"))
    head = _head_file(source, scratch) if entry.task is Task.TEXT_CLASSIFICATION else None
    cases = encoder_cases(name, artifact, exports, peer_python, head, workloads, minilm_dir())
    del source, pipeline  # the parent only waits while cases run

    skipped: dict[str, str] = {}

    def on_skip(case: PeerCase, reason: str) -> None:
        skipped[case.name] = reason
        console.log(f"[yellow]skipping {case.name}[/yellow]: {escape(reason)}")  # a hint may hold [extras]

    console.log(f"starting {len(cases)} cases, each in its own process")
    running = start_all(cases, REPO_ROOT, REPO_ROOT / "build" / "peers" / "logs", on_skip)

    def step(workload: str) -> Callable[[PeerProcess], list[float]]:
        return lambda process: list(process.call("time", workload=workload, repeats=REPEATS[workload]))

    try:
        steps = {w: step(w) for w in WORKLOADS}
        per_round = alternate_rounds(running, steps, rounds, lambda i: console.log(f"round {i + 1} of {rounds}"))
        quality = {}
        for case_name, process in running.items():
            path = scratch / f"{case_name}.npy"
            process.call("outputs", texts=heldout, path=str(path))
            quality[case_name] = _quality(entry.task, reference, np.load(path))
    finally:
        for process in running.values():
            process.close()
    load["end"] = load_average()
    results = run_header(name, rounds=rounds, repeats=REPEATS, heldout=len(heldout), cases={}, skipped=skipped,
                         load=load, arch=platform.machine(), int8_config=int8_config_for_host()[1],
                         gates=_gates(entry))  # fmt: skip
    for case in cases:
        if case.name in running:
            results["cases"][case.name] = {
                "label": case.label,
                "latency": summarise(per_round[case.name]),
                "quality": quality[case.name],
            }
    results["paired"] = _paired(per_round)
    return write_encoder_peers_report(results, out_dir, console)


def _paired(per_round: dict[str, list[dict[str, list[float]]]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per maas build, workload and peer: the median over rounds of peer ÷ maas (neighbours in time)."""
    peers = [name for name in per_round if not is_maas(name)]
    return {
        mine: {w: {p: paired_ratio(per_round, mine, p, w) for p in peers} for w in WORKLOADS}
        for mine in per_round
        if is_maas(mine)
    }


def _quality(task: Any, reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    from functions.contract import Task

    if task is Task.TEXT_CLASSIFICATION:
        return {"top1_agreement": float((reference.argmax(1) == got.argmax(1)).mean())}
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    out = got / np.linalg.norm(got, axis=1, keepdims=True)
    cosine = (ref * out).sum(axis=1)
    return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min())}


def _gates(entry: Any) -> dict[str, float | None]:
    g = entry.gates
    return {"mean_cosine": g.quantized_mean_cosine, "min_cosine": g.quantized_min_cosine,
            "top1_agreement": g.quantized_top1_agreement}  # fmt: skip


def _head_file(source: Any, scratch: Path) -> Path:
    """The classifier's linear head (weight [classes, 384], bias) as .npz, for the peers' pooled vectors."""
    head = source.module.head
    path = scratch / "head.npz"
    np.savez(path, weight=head.weight.detach().numpy(), bias=head.bias.detach().numpy())
    return path
