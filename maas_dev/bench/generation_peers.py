"""`maas bench smollm2-chat --peers`: maas against llama.cpp, onnxruntime-genai and torch, each in its own process.

Speed: time to first token (the prompt, then one greedy token) and decode tokens/s over ``new_tokens`` greedy
tokens (EOS ignored), from the bench's chat prompt, rounds alternated. Quality, measured as the build's gates
measure maas: next-token top-1 agreement with torch fp32 and perplexity over the held-out paragraphs
(teacher-forced, every position), and greedy continuations of the parity prompts equal to torch's.

Peers that are not installed are skipped with a line that says how to provide them.
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
from maas_dev.bench.generation import PROMPT
from maas_dev.bench.peer_process import (
    PeerCase,
    PeerProcess,
    alternate_rounds,
    is_maas,
    load_average,
    maas_variants,
    start_all,
)

DEFAULT_GENAI_MODEL = Path("build/peers/smollm2-genai-int4")
GENAI_HINT = (
    "make it with `MAAS_ORT_GENAI_PYTHON=<genai venv python> python -m maas_dev.bench.genai_model` (writes {model}; "
    "docs/benchmarks/README.md, Peers) or point MAAS_ORT_GENAI_MODEL at a builder output folder"
)


def generation_cases(entry: Any, artifact: Path, gguf: Path, prompt_ids: list[int], threads: int) -> list[PeerCase]:
    worker = "maas_dev.bench.generation_worker"
    common = {"prompt_ids": prompt_ids, "threads": threads}
    llama_python = os.environ.get("MAAS_LLAMA_CPP_PYTHON", sys.executable)
    genai_python = os.environ.get("MAAS_ORT_GENAI_PYTHON", sys.executable)
    genai_model = Path(os.environ.get("MAAS_ORT_GENAI_MODEL", _repo() / DEFAULT_GENAI_MODEL))
    n_batch = int(os.environ.get("MAAS_LLAMA_CPP_N_BATCH", "512"))
    return [
        PeerCase("torch_eager_fp32", "torch eager fp32 (the de-quantized GGUF; the quality reference)",
                 sys.executable, worker, {"kind": "torch", "source": entry.source, "task": entry.task.value, **common}),
        PeerCase("llama_cpp", f"llama.cpp (llama-cpp-python) on the same Q4_1 GGUF, n_batch {n_batch}",
                 llama_python, worker, {"kind": "llama.cpp", "gguf": str(gguf), "n_batch": n_batch, **common}),
        PeerCase("onnxruntime_genai_int4", "onnxruntime-genai, its model builder's INT4 CPU model",
                 genai_python, worker, {"kind": "onnxruntime-genai", "model_dir": str(genai_model),
                                        "how": GENAI_HINT.format(model=genai_model), **common}),
        PeerCase("maas", f"maas {entry.name} ({entry.quantization})", sys.executable, worker,
                 {"kind": "maas", "artifact": str(artifact), **common}),
        *(PeerCase(name, f"maas, another build: {path}", sys.executable, worker,
                   {"kind": "maas", "artifact": path, **common}) for name, path in maas_variants().items()),
    ]  # fmt: skip


def _repo() -> Path:
    from model_build.catalog import REPO_ROOT

    return Path(REPO_ROOT)


def run_generation_peers(name: str, *, rounds: int, new_tokens: int, out_dir: Path, console: Console) -> Path:
    from functions.inference.decoding import render_chat
    from functions.inference.loader import verify_artifact
    from functions.inference.pipelines.generation import GenerationPipeline
    from functions.inference.registry import pipeline_for
    from functions.inference.session import available_cpus
    from maas_dev.bench.common import ensure_built
    from maas_dev.bench.peer_report import write_generation_peers_report
    from model_build.recipes.generation import GREEDY_NEW_TOKENS, PARITY_PROMPTS, _messages, heldout_paragraphs
    from model_build.sources.smollm2 import GGUF_FILE, gguf_dir

    load = {"start": load_average()}
    entry, artifact, _ = ensure_built(name, "stage-fp32/manifest.json", console)
    pipeline = pipeline_for(artifact, verify_artifact(artifact), warmup=False)
    assert isinstance(pipeline, GenerationPipeline)
    prompt_ids = pipeline.encode(PROMPT)
    paragraphs = [pipeline.encode(p) for p in heldout_paragraphs()]
    system = pipeline.config.default_system_prompt
    parity = [pipeline.encode(p if isinstance(p, str) else render_chat(_messages(p), default_system_prompt=system))
              for p in PARITY_PROMPTS]  # fmt: skip
    eos = sorted(pipeline.eos_token_ids)
    del pipeline
    cases = generation_cases(entry, artifact, gguf_dir() / GGUF_FILE, prompt_ids, available_cpus())
    skipped: dict[str, str] = {}

    def on_skip(case: PeerCase, reason: str) -> None:
        skipped[case.name] = reason
        console.log(f"[yellow]skipping {case.name}[/yellow]: {escape(reason)}")  # a hint may hold [extras]

    running = start_all(cases, _repo(), _repo() / "build" / "peers" / "logs", on_skip)
    scratch = Path(tempfile.mkdtemp(prefix="maas-gen-peers-"))

    steps: dict[str, Callable[[PeerProcess], Any]] = {
        "pairs": lambda process: process.call("time_pair", count=new_tokens, repeats=3),
    }
    try:
        per_round = alternate_rounds(running, steps, rounds, lambda i: console.log(f"round {i + 1} of {rounds}"))
        console.log("quality: teacher-forced held-out positions and greedy parity prompts, every case")
        quality_raw = {}
        for case_name, process in running.items():
            path = scratch / f"{case_name}.npz"
            process.call("teacher_forced", paragraphs=paragraphs, path=str(path))
            greedy = process.call("greedy", prompts=parity, count=GREEDY_NEW_TOKENS, eos=eos)
            with np.load(path) as saved:
                quality_raw[case_name] = (saved["argmax"], saved["target_logprob"], greedy)
    finally:
        for process in running.values():
            process.close()
    load["end"] = load_average()
    results = run_header(name, rounds=rounds, new_tokens=new_tokens, prompt_tokens=len(prompt_ids), cases={},
                         skipped=skipped, load=load, arch=platform.machine(), heldout_positions=0,
                         gates={"top1_agreement": entry.gates.quantized_top1_agreement,
                                "perplexity_increase": entry.gates.quantized_max_perplexity_increase})  # fmt: skip
    reference = quality_raw.get("torch_eager_fp32")
    for case in cases:
        if case.name not in running:
            continue
        results["cases"][case.name] = {
            "label": case.label,
            **speed([r["pairs"] for r in per_round[case.name]], new_tokens),
            "quality": _quality(quality_raw[case.name], reference) if reference else {},
        }
        if reference:
            results["heldout_positions"] = len(reference[0])
    results["paired"] = paired(results["cases"])
    return write_generation_peers_report(results, out_dir, console)


def paired(cases: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """Per maas build and peer: median over rounds of maas ÷ peer decode tokens/s, and of maas ÷ peer TTFT (each
    round's pair ran seconds apart)."""
    import statistics

    def ratio(mine: list[float], theirs: list[float]) -> float:
        return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))

    return {
        m: {
            p: {
                "decode": ratio(cases[m]["decode_round_tokens_per_s"], cases[p]["decode_round_tokens_per_s"]),
                "ttft": ratio(cases[m]["ttft_round_ms"], cases[p]["ttft_round_ms"]),
            }
            for p in cases
            if not is_maas(p)
        }
        for m in cases
        if is_maas(m)
    }


def speed(rounds: list[list[list[float]]], new_tokens: int) -> dict[str, Any]:
    """TTFT and decode tokens/s from per-round [first token s, all tokens s] pairs: medians over every pair,
    and the per-round medians (the spread)."""
    import statistics

    def decode(pairs: list[list[float]]) -> float:
        return (new_tokens - 1) / max(statistics.median(full - first for first, full in pairs), 1e-9)

    every = [pair for r in rounds for pair in r]
    return {
        "time_to_first_token_ms": statistics.median(first for first, _ in every) * 1000,
        "ttft_round_ms": [statistics.median(first for first, _ in r) * 1000 for r in rounds],
        "decode_tokens_per_s": decode(every),
        "decode_round_tokens_per_s": [decode(r) for r in rounds],
    }


def _quality(mine: tuple[np.ndarray, np.ndarray, list[list[int]]], ref: tuple[Any, ...]) -> dict[str, float]:
    argmax, logprob, greedy = mine
    ref_argmax, ref_logprob, ref_greedy = ref
    return {
        "top1_agreement": float((argmax == ref_argmax).mean()),
        "perplexity": float(np.exp(-logprob.mean())),
        "perplexity_increase": float(np.exp(ref_logprob.mean() - logprob.mean()) - 1),
        "greedy_match": float(np.mean([a == b for a, b in zip(greedy, ref_greedy, strict=True)])),
    }
