"""`maas bench <text-generation model>`: decode speed side by side in ONE run, interleaved.

Cases, all greedy, generating exactly ``new_tokens`` (EOS ignored so every case does the same work):
torch eager (``generate`` with its DynamicCache), ORT on the fp32 export and the maas artifact through
the runtime's own generation loop (KV cache), the maas artifact with its cache copied into new
present tensors every step instead of kept in shared buffers (when the graph supports them), and the
maas artifact *without* the cache (every step re-runs the whole sequence, as an export without
past_key_values must). Reported per case: time to
first token (prefill of the prompt + one step) and decode tokens/s over the remaining tokens.

Run it as ``python -m maas_dev.bench.generation smollm2-chat``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from maas_dev.bench.common import ensure_built, run_header
from maas_dev.bench.report import machine_line, model_sizes, size_line, write_json

PROMPT = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWrite a short story about a lighthouse keeper who finds a message in a bottle.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
CASES = ("torch_eager_fp32", "ort_fp32", "maas_artifact", "maas_artifact_copied_cache", "maas_artifact_no_cache")


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run_generation_bench(
    name: str, *, new_tokens: int = 128, repeats: int = 3, out_dir: Path, console: Console
) -> Path:
    import torch

    from functions.inference.decoding import Generation, KVCacheDecoder, Sampler, SamplingParams
    from functions.inference.loader import verify_artifact
    from functions.inference.pipelines.generation import GenerationPipeline
    from functions.inference.registry import pipeline_for
    from functions.inference.session import available_cpus
    from model_build.sources import load_source

    entry, artifact, fp32_manifest = ensure_built(name, "stage-fp32/manifest.json", console)
    fp32_dir = fp32_manifest.parent
    torch.set_num_threads(available_cpus())
    model = load_source(entry.source, task=entry.task).module.eval()
    served = pipeline_for(artifact, verify_artifact(artifact))
    fp32 = pipeline_for(fp32_dir, verify_artifact(fp32_dir))
    assert isinstance(served, GenerationPipeline) and isinstance(fp32, GenerationPipeline)
    ids = served.encode(PROMPT)

    def torch_case(count: int) -> Callable[[], object]:
        tensor = torch.tensor([ids])

        def run() -> object:
            with torch.inference_mode():
                return model.generate(
                    tensor,
                    attention_mask=torch.ones_like(tensor),
                    do_sample=False,
                    max_new_tokens=count,
                    min_new_tokens=count,
                    pad_token_id=0,
                )

        return run

    def ort_case(
        pipeline: GenerationPipeline, count: int, decoder: KVCacheDecoder | None = None
    ) -> Callable[[], object]:
        def run() -> object:
            return Generation(
                decoder=decoder or pipeline.decoder,
                decode=pipeline.decode,
                prompt_ids=ids,
                max_new_tokens=count,
                sampler=Sampler(SamplingParams()),
                eos_token_ids=frozenset(),  # exactly `count` tokens, like min_new_tokens above
            ).run()

        return run

    def no_cache_case(pipeline: GenerationPipeline, count: int) -> Callable[[], object]:
        def run() -> object:
            sequence = list(ids)
            for _ in range(count):  # a fresh, empty cache each step: the whole sequence is recomputed
                logits = pipeline.decoder.forward(sequence, pipeline.decoder.empty_cache())
                sequence.append(int(np.argmax(logits)))
            return sequence

        return run

    cases: dict[str, dict[int, Callable[[], object]]] = {
        "torch_eager_fp32": {n: torch_case(n) for n in (1, new_tokens)},
        "ort_fp32": {n: ort_case(fp32, n) for n in (1, new_tokens)},
        "maas_artifact": {n: ort_case(served, n) for n in (1, new_tokens)},
    }
    if served.decoder.shared_buffer:
        copied = KVCacheDecoder(served.session, shared_buffer=False)
        cases["maas_artifact_copied_cache"] = {n: ort_case(served, n, copied) for n in (1, new_tokens)}
    cases["maas_artifact_no_cache"] = {n: no_cache_case(served, n) for n in (1, new_tokens)}
    console.log(f"{name}: prompt {len(ids)} tokens, {new_tokens} new tokens, {repeats} interleaved rounds")
    for by_count in cases.values():  # warm-up
        by_count[1]()
    samples: dict[str, dict[int, list[float]]] = {case: {1: [], new_tokens: []} for case in cases}
    for _ in range(repeats):
        for case, by_count in cases.items():
            for count, fn in by_count.items():
                samples[case][count].append(_timed(fn))
    results = run_header(
        name,
        prompt_tokens=len(ids),
        new_tokens=new_tokens,
        repeats=repeats,
        quantization=served.manifest.quantization.preset,
        cases={},
    )
    for case in cases:
        first = float(np.median(samples[case][1]))
        full = float(np.median(samples[case][new_tokens]))
        results["cases"][case] = {
            "time_to_first_token_ms": first * 1000,
            "total_ms": full * 1000,
            "decode_tokens_per_s": (new_tokens - 1) / max(full - first, 1e-9),
            "end_to_end_tokens_per_s": new_tokens / full,
        }
    results["sizes_mb"] = model_sizes(fp32_dir / "model.onnx", artifact / "model.onnx")
    return write_generation_report(results, out_dir, console)


def write_generation_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    name = results["model"]
    write_json(results, out_dir, name)
    base = results["cases"]["torch_eager_fp32"]
    lines = [
        f"# `maas bench {name}` (prompt {results['prompt_tokens']} tokens, {results['new_tokens']} new tokens)",
        "",
        machine_line(results, f"torch {results['machine']['torch']}", f"artifact {results['quantization']}"),
        "",
        "Greedy, EOS ignored; KV cache in every case but `maas_artifact_no_cache` (each step re-runs the "
        "whole sequence); `maas_artifact_copied_cache` feeds each step's presents back as new tensors instead of "
        "keeping one shared buffer per layer; all cases timed interleaved in one run (median of "
        f"{results['repeats']}). Ratios are over torch eager (higher is better).",
        "",
        "| case | time to first token | decode tokens/s | × torch decode | end-to-end tokens/s | × torch e2e |",
        "|---|---|---|---|---|---|",
    ]
    table = Table("case", "TTFT ms", "decode tok/s", "×torch", "e2e tok/s", "×torch", title=f"{name}: generation")
    for case in CASES:
        if case not in results["cases"]:
            continue
        c = results["cases"][case]
        r_decode = c["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        r_e2e = c["end_to_end_tokens_per_s"] / base["end_to_end_tokens_per_s"]
        lines.append(
            f"| {case} | {c['time_to_first_token_ms']:.0f} ms | {c['decode_tokens_per_s']:.1f} | {r_decode:.2f}× | "
            f"{c['end_to_end_tokens_per_s']:.1f} | {r_e2e:.2f}× |"
        )
        table.add_row(
            case,
            f"{c['time_to_first_token_ms']:.0f}",
            f"{c['decode_tokens_per_s']:.1f}",
            f"{r_decode:.2f}×",
            f"{c['end_to_end_tokens_per_s']:.1f}",
            f"{r_e2e:.2f}×",
        )
    lines += ["", size_line(results["sizes_mb"], decimals=0, end=""), ""]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    console.print(table)
    return report


if __name__ == "__main__":
    model_name = sys.argv[1] if len(sys.argv) > 1 else "smollm2-chat"
    print(run_generation_bench(model_name, out_dir=Path("docs/benchmarks"), console=Console()))
