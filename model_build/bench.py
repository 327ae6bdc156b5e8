"""`maas bench <model>`: side-by-side latency in ONE run (interleaved, so machine noise hits all alike).

Cases: torch eager fp32, ORT fp32 (the optimized export), the maas artifact, at batch 1 and 32; then
the served path: HTTP end-to-end on loopback vs the pipeline in-process vs bare ``session.run``.
"""

from __future__ import annotations

import http.client
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

Timer = Callable[[], object]
BATCHES = (1, 8, 32)


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


def run_bench(name: str, *, seq: int, repeats: int, out_dir: Path, console: Console) -> Path:
    import torch

    from functions.api.server import BackgroundServer
    from functions.inference.loader import verify_artifact
    from functions.inference.registry import ModelRegistry, pipeline_for
    from functions.inference.session import available_cpus, create_session
    from model_build.bench_batch import batch_throughput
    from model_build.bench_batch import records as batch_records
    from model_build.bench_coldstart import measure_cold_start
    from model_build.bench_microbatch import microbatch_throughput
    from model_build.bench_roofline import encoder_flops_per_token, gemm_gops
    from model_build.sources import load_source

    entry, artifact, fp32_path = ensure_built(name, "fp32/model.onnx", console)
    torch.set_num_threads(available_cpus())
    source = load_source(entry.source, task=entry.task)
    reference = source.reference  # the torch original (HF model + pooling/head), not the export wrapper
    fp32 = create_session(fp32_path)
    served = create_session(artifact / "model.onnx")
    results = run_header(name, seq=seq, repeats=repeats, latency={})
    for batch in BATCHES:
        feeds = text_feeds(batch, seq)
        tensors = {k: torch.from_numpy(v) for k, v in feeds.items()}
        names_fp32 = [i.name for i in fp32.get_inputs()]
        names_served = [i.name for i in served.get_inputs()]

        def torch_eager(t: dict[str, Any] = tensors) -> object:
            with torch.inference_mode():
                return reference(t)

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
    with BackgroundServer(registry) as server:
        url = f"/models/{name}/predict"
        body = json.dumps({"inputs": [text]})
        # a keep-alive stdlib client: the lightest realistic caller, so the figure is the server's overhead
        conn = http.client.HTTPConnection(server.host, server.port)

        def http_post() -> None:
            conn.request("POST", url, body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"bench request failed: {response.status}")

        console.log("serving path: HTTP end-to-end vs in-process pipeline vs bare session.run (batch 1)")
        results["serving"] = interleaved(
            {
                "bare_session_run": lambda: pipeline.run(encoded.feeds()),
                "pipeline_in_process": lambda: pipeline.predict([text]),
                "http_end_to_end": http_post,
            },
            repeats=repeats * 2,
        )
        conn.close()
        results["serving"]["tokens"] = {"count": int(encoded.token_counts[0])}
        results["concurrency"] = concurrent_throughput(server.url, url, text, pipeline, encoded, clients=4)
        console.log(f"batch throughput: S3 job vs HTTP vs bare session.run at batch {pipeline.limits.max_batch}")
        results["batch_throughput"] = batch_throughput(pipeline, server, seq=seq)
    console.log("micro-batching: 64 concurrent single requests vs offline batches")
    results["microbatch"] = microbatch_throughput(pipeline, batch_records(pipeline, seq, 256)["uniform"])
    results["cold_start"] = measure_cold_start(artifact, Path(source.tokenizer_file).parent)
    results["roofline"] = gemm_gops()
    flops = encoder_flops_per_token(source.hidden_size, _layers(source), seq)
    b32 = results["latency"]["batch_32"]["maas_artifact"]["p50_ms"] / 1000
    results["roofline"]["model_gops_b32"] = flops * 32 * seq / b32 / 1e9
    results["roofline"]["fraction_of_int8_gemm"] = (
        results["roofline"]["model_gops_b32"] / results["roofline"]["int8_gops"]
    )
    results["sizes_mb"] = {
        "fp32": fp32_path.stat().st_size / 1e6,
        "maas_artifact": (artifact / "model.onnx").stat().st_size / 1e6,
    }
    from model_build.bench_report import write_report

    return write_report(results, out_dir, console)


def _layers(source: Any) -> int:
    return len(getattr(source.module, "blocks", None) or getattr(getattr(source.module, "encoder", None), "blocks", []))


def concurrent_throughput(
    base_url: Any, url: str, text: str, pipeline: Any, encoded: Any, clients: int
) -> dict[str, float]:
    """Requests/s with ``clients`` concurrent HTTP callers vs back-to-back bare ``session.run`` (batch 1)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    per_client = 25
    started = time.perf_counter()
    for _ in range(per_client * clients):
        pipeline.run(encoded.feeds())
    bare_rps = per_client * clients / (time.perf_counter() - started)

    def caller(_: int) -> None:
        with httpx.Client(base_url=str(base_url)) as client:
            for _ in range(per_client):
                client.post(url, json={"inputs": [text]}).raise_for_status()

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(caller, range(clients)))
    http_rps = per_client * clients / (time.perf_counter() - started)
    return {"clients": clients, "bare_session_run_rps": bare_rps, "http_rps": http_rps, "ratio": http_rps / bare_rps}
