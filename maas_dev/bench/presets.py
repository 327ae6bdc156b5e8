"""`maas bench <embedding model> --compare-presets`: every INT8 candidate, quality and speed in ONE run.

Each preset quantizes the same optimized fp32 graph; each candidate is then judged the way the build
judges the served model (cosine of its pooled embeddings with the fp32 export — itself within 2e-7 of
torch — on the held-out sentences, through the runtime's own pre/post-processing) and timed
interleaved with the others at batch 1 and 32 (seq 128). The output is the record of what was tried:
which presets clear the catalog's gates, and what each costs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from maas_dev.bench.common import ensure_built, run_header, text_feeds
from maas_dev.bench.report import machine_line, write_json
from model_build import DATA_DIR

CANDIDATES = (
    "fp32",
    "int8-dynamic-matmul-per-channel",
    "int8-dynamic-ffn-outliers",
    "int8-dynamic-early-ffn-blockwise",
    "int8-dynamic-ffn-blockwise",
    "int8-dynamic-ffn-both-blockwise",
    "int8-weight-only",
    "int4-weight-only",
)
DATA = DATA_DIR


def compare_presets(name: str, *, out_dir: Path, console: Console, rounds: int = 6) -> Path:
    from functions.inference.loader import read_manifest, verify_artifact
    from functions.inference.registry import pipeline_for
    from model_build.quantize import get_preset, quantize
    from model_build.validate import calibration_batches

    entry, artifact, fp32_path = ensure_built(name, "fp32/model.onnx", console)
    verify_artifact(artifact)
    held = [s for s in (DATA / "heldout_sentences.txt").read_text().splitlines() if s.strip()]
    gates = entry.gates
    gate_bars = {"mean_cosine": gates.quantized_mean_cosine, "min_cosine": gates.quantized_min_cosine,
                 "max_size_ratio": gates.max_size_ratio}  # fmt: skip
    results = run_header(name, served_preset=entry.quantization, heldout=len(held), gates=gate_bars, presets={})
    with tempfile.TemporaryDirectory(prefix="maas-presets-") as scratch:
        pipes = {}
        for preset in CANDIDATES:
            console.log(f"quantizing with {preset}")
            directory = Path(scratch) / preset
            shutil.copytree(artifact, directory)
            chosen = get_preset(preset)
            calibration = (
                calibration_batches(artifact / "tokenizer.json", entry.task, max_seq_len=entry.limits.max_seq_len)
                if chosen.fp32_outliers
                else None
            )
            quantize(fp32_path, directory / "model.onnx", chosen, calibration)
            # the manifest's hashes name the served file: these candidates are read without verification
            pipes[preset] = pipeline_for(directory, read_manifest(directory), warmup=False)
        reference = np.concatenate([pipes["fp32"].embed(held[i : i + 32])[0] for i in range(0, len(held), 32)])
        feeds = {1: text_feeds(1, 128), 32: text_feeds(32, 128)}
        samples: dict[str, dict[int, list[float]]] = {p: {1: [], 32: []} for p in CANDIDATES}
        for pipe in pipes.values():  # warm-up
            pipe.run(feeds[1])
        console.log(f"timing {len(CANDIDATES)} presets interleaved, {rounds} rounds")
        for _ in range(rounds):
            for preset, pipe in pipes.items():
                for batch, repeat in ((1, 5), (32, 1)):
                    for _ in range(repeat):
                        started = time.perf_counter()
                        pipe.run(feeds[batch])
                        samples[preset][batch].append(time.perf_counter() - started)
        fp32_bytes = fp32_path.stat().st_size
        for preset, pipe in pipes.items():
            vectors = np.concatenate([pipe.embed(held[i : i + 32])[0] for i in range(0, len(held), 32)])
            cosine = (vectors * reference).sum(1) / np.linalg.norm(vectors, axis=1) / np.linalg.norm(reference, axis=1)
            size = (Path(scratch) / preset / "model.onnx").stat().st_size
            results["presets"][preset] = {
                "mean_cosine": float(cosine.mean()),
                "min_cosine": float(cosine.min()),
                "size_ratio": size / fp32_bytes,
                "b1_p50_ms": float(np.median(samples[preset][1])) * 1000,
                "b32_p50_ms": float(np.median(samples[preset][32])) * 1000,
            }
    return write_presets_report(results, out_dir, console)


def write_presets_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    name, g = results["model"], results["gates"]
    stem = f"{name}-presets"
    write_json(results, out_dir, stem)
    fp32 = results["presets"]["fp32"]
    lines = [
        f"# `maas bench {name} --compare-presets`",
        "",
        machine_line(results),
        "",
        f"Every preset quantizes the same optimized fp32 graph; cosine with the fp32 export on {results['heldout']} "
        "held-out sentences through the runtime's pooling; latency at seq 128, all presets timed interleaved in one "
        f"run. Catalog gates: mean ≥ {g['mean_cosine']}, min ≥ {g['min_cosine']}, size ≤ {g['max_size_ratio']:.0%}. "
        f"Served: `{results['served_preset']}`.",
        "",
        "| preset | mean cosine | min cosine | size | b1 p50 | ×fp32 b1 | b32 p50 | ×fp32 b32 | passes gates |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    table = Table("preset", "mean cos", "min cos", "size", "b1 ms", "b32 ms", "gates", title=f"{name}: presets")
    for preset, r in results["presets"].items():
        passes = (
            r["mean_cosine"] >= g["mean_cosine"] and r["min_cosine"] >= g["min_cosine"]
            and r["size_ratio"] <= g["max_size_ratio"]
        )  # fmt: skip
        mark = "yes" if passes else "no"
        preset_cell = f"**{preset}** (served)" if preset == results["served_preset"] else preset
        lines.append(
            f"| {preset_cell} | {r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | {r['size_ratio']:.0%} | "
            f"{r['b1_p50_ms']:.1f} ms | {fp32['b1_p50_ms'] / r['b1_p50_ms']:.2f}× | {r['b32_p50_ms']:.0f} ms | "
            f"{fp32['b32_p50_ms'] / r['b32_p50_ms']:.2f}× | {mark} |"
        )
        table.add_row(
            preset,
            f"{r['mean_cosine']:.4f}",
            f"{r['min_cosine']:.4f}",
            f"{r['size_ratio']:.0%}",
            f"{r['b1_p50_ms']:.1f}",
            f"{r['b32_p50_ms']:.0f}",
            mark,
        )
    console.print(table)
    report = out_dir / f"{stem}.md"
    report.write_text("\n".join([*lines, ""]))
    return report
