"""`maas bench <model>`: side-by-side latency in ONE run (interleaved, so machine noise hits all alike).

Cases: torch eager fp32, ORT fp32 (the optimized export), the maas artifact, at batch 1 and 32; then
the served path: HTTP end-to-end on loopback vs the pipeline in-process vs bare ``session.run``.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

Timer = Callable[[], object]


def machine() -> dict[str, Any]:
    import onnxruntime
    import torch

    from functions.inference.session import available_cpus

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f" {f}" in flags]
    return {
        "cpu": cpu,
        "cpus_used": available_cpus(),
        "isa": isa,
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }


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


def run_bench(name: str, *, seq: int, repeats: int, out_dir: Path, console: Console) -> Path:
    import httpx
    import torch

    from functions.api.server import BackgroundServer
    from functions.inference.loader import verify_artifact
    from functions.inference.registry import ModelRegistry, pipeline_for
    from functions.inference.session import available_cpus, create_session
    from model_build.build import artifacts_root, build_model, work_root
    from model_build.catalog import get_entry
    from model_build.sources import load_source

    entry = get_entry(name)
    artifact, fp32_path = artifacts_root() / name, work_root() / name / "fp32" / "model.onnx"
    if not (artifact / "manifest.json").is_file() or not fp32_path.is_file():
        console.log(f"building {name} first")
        build_model(entry)
    torch.set_num_threads(available_cpus())
    source = load_source(entry.source, task=entry.task)
    module = source.module.eval()
    fp32 = create_session(fp32_path)
    served = create_session(artifact / "model.onnx")
    results: dict[str, Any] = {
        "model": name,
        "seq": seq,
        "repeats": repeats,
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "latency": {},
    }
    for batch in (1, 32):
        feeds = text_feeds(batch, seq)
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
        names_fp32 = [i.name for i in fp32.get_inputs()]
        names_served = [i.name for i in served.get_inputs()]

        def torch_eager(t: dict[str, Any] = tensors) -> object:
            with torch.inference_mode():
                return module(**t)

        console.log(f"batch {batch}: timing torch eager / ORT fp32 / maas artifact, interleaved")
        results["latency"][f"batch_{batch}"] = interleaved(
            {
                "torch_eager_fp32": torch_eager,
                "ort_fp32": lambda f=feeds, n=names_fp32: fp32.run(None, {k: f[k] for k in n}),
                "maas_artifact": lambda f=feeds, n=names_served: served.run(None, {k: f[k] for k in n}),
            },
            repeats=max(3, repeats // (4 if batch > 1 else 1)),
        )

    pipeline = pipeline_for(artifact, verify_artifact(artifact))
    registry = ModelRegistry()
    registry.add(pipeline)
    text = text_of_tokens(pipeline, seq)
    encoded = pipeline.encoder.encode([text], truncate=True)
    with BackgroundServer(registry) as server, httpx.Client(base_url=server.url) as http:
        url = f"/models/{name}/predict"
        console.log("serving path: HTTP end-to-end vs in-process pipeline vs bare session.run (batch 1)")
        results["serving"] = interleaved(
            {
                "bare_session_run": lambda: pipeline.run(encoded.feeds()),
                "pipeline_in_process": lambda: pipeline.predict([text]),
                "http_end_to_end": lambda: http.post(url, json={"inputs": [text]}).raise_for_status(),
            },
            repeats=repeats * 2,
        )
        results["serving"]["tokens"] = {"count": int(encoded.token_counts[0])}
    results["sizes_mb"] = {
        "fp32": fp32_path.stat().st_size / 1e6,
        "maas_artifact": (artifact / "model.onnx").stat().st_size / 1e6,
    }
    return write_report(results, out_dir, console)


def write_report(results: dict[str, Any], out_dir: Path, console: Console) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    name = results["model"]
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        f"# `maas bench {name}` (seq {results['seq']})",
        "",
        f"{results['date']} · {results['machine']['cpu']} · {results['machine']['cpus_used']} CPUs used · "
        f"ISA {', '.join(results['machine']['isa']) or 'baseline'} · onnxruntime {results['machine']['onnxruntime']}"
        f" · torch {results['machine']['torch']}",
        "",
        "All cases timed interleaved in one run; ratios are speed-ups over torch eager (higher is better).",
        "",
        "| case | batch 1 p50 | batch 1 p99 | ×torch b1 | batch 32 p50 | batch 32 p99 | ×torch b32 |",
        "|---|---|---|---|---|---|---|",
    ]
    table = Table(
        "case", "b1 p50 ms", "×torch", "b32 p50 ms", "×torch", title=f"{name}: latency (seq {results['seq']})"
    )
    lat = results["latency"]
    for case in ("torch_eager_fp32", "ort_fp32", "maas_artifact"):
        b1, b32 = lat["batch_1"][case], lat["batch_32"][case]
        r1 = lat["batch_1"]["torch_eager_fp32"]["p50_ms"] / b1["p50_ms"]
        r32 = lat["batch_32"]["torch_eager_fp32"]["p50_ms"] / b32["p50_ms"]
        lines.append(
            f"| {case} | {b1['p50_ms']:.1f} ms | {b1['p99_ms']:.1f} ms | {r1:.2f}× | "
            f"{b32['p50_ms']:.1f} ms | {b32['p99_ms']:.1f} ms | {r32:.2f}× |"
        )
        table.add_row(case, f"{b1['p50_ms']:.1f}", f"{r1:.2f}×", f"{b32['p50_ms']:.1f}", f"{r32:.2f}×")
    serving = results["serving"]
    bare = serving["bare_session_run"]["p50_ms"]
    lines += [
        "",
        f"Serving path, batch 1, one input of {serving['tokens']['count']} tokens:",
        "",
        "| path | p50 | p99 | × bare session.run |",
        "|---|---|---|---|",
    ]
    serve_table = Table("path", "p50 ms", "p99 ms", "× bare", title="serving overhead (batch 1)")
    for case in ("bare_session_run", "pipeline_in_process", "http_end_to_end"):
        s = serving[case]
        lines.append(f"| {case} | {s['p50_ms']:.2f} ms | {s['p99_ms']:.2f} ms | {s['p50_ms'] / bare:.3f}× |")
        serve_table.add_row(case, f"{s['p50_ms']:.2f}", f"{s['p99_ms']:.2f}", f"{s['p50_ms'] / bare:.3f}×")
    sizes = results["sizes_mb"]
    lines += [
        "",
        f"Model file: fp32 {sizes['fp32']:.1f} MB → maas artifact {sizes['maas_artifact']:.1f} MB "
        f"({sizes['maas_artifact'] / sizes['fp32']:.0%})",
        "",
    ]
    report = out_dir / f"{name}.md"
    report.write_text("\n".join(lines))
    console.print(table)
    console.print(serve_table)
    return report
