"""`maas bench <model>`: side-by-side latency in ONE run (interleaved, so machine noise hits all alike).

Cases: torch eager fp32, ORT fp32 (the optimized export), the maas artifact, at batch 1 and 32; then
the served path: HTTP end-to-end on loopback vs the pipeline in-process vs bare ``session.run``.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from maas_dev.bench.common import ensure_built, interleaved, run_header, text_feeds, text_of_tokens

BATCHES = (1, 8, 32)


def run_bench(name: str, *, seq: int, repeats: int, out_dir: Path, console: Console) -> Path:
    import torch

    from functions.inference.loader import verify_artifact
    from functions.inference.registry import ModelRegistry, pipeline_for
    from functions.inference.session import available_cpus, create_session
    from maas_dev.bench.batch import batch_throughput
    from maas_dev.bench.batch import records as batch_records
    from maas_dev.bench.coldstart import measure_cold_start
    from maas_dev.bench.microbatch import microbatch_throughput
    from maas_dev.bench.roofline import encoder_flops_per_token, gemm_gops
    from maas_dev.server import BackgroundServer
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
    from maas_dev.bench.report import write_report

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
