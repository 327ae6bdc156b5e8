"""Micro-batching in `maas bench`: many concurrent single-input requests vs offline batches.

Three figures, all single-input requests on the same records, side by side in one run:

- ``offline_batch``: ``pipeline.predict`` on chunks of ``max_batch`` records back to back (the ceiling);
- ``microbatch_in_process``: ``clients`` concurrent callers of ``MicroBatcher.predict`` (no HTTP);
- ``http_microbatch_on`` / ``http_microbatch_off``: ``clients`` concurrent HTTP callers (one asyncio httpx
  client in this process) against `maas serve` with ``MAAS_MICROBATCH`` on and off.

The target in issue 6 is for the GPU container (≥70% of offline batch-32 throughput at 64 concurrent
single requests); on a 2-vCPU machine the HTTP figures also pay for the load generator itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any


def microbatch_throughput(
    pipeline: Any, texts: list[str], *, clients: int = 64, wait_ms: float = 2.0
) -> dict[str, Any]:
    import httpx

    from functions.inference.batching import MicroBatcher
    from functions.inference.registry import ModelRegistry
    from functions.settings import Settings
    from maas_dev.server import BackgroundServer

    batch = pipeline.limits.max_batch
    count = len(texts)
    chunks = [texts[i : i + batch] for i in range(0, count, batch)]

    def offline() -> float:
        started = time.perf_counter()
        for chunk in chunks:
            pipeline.predict(chunk)
        return count / (time.perf_counter() - started)

    async def drive(call: Any) -> float:
        queue = list(range(count))

        async def worker() -> None:
            while queue:
                await call(texts[queue.pop()])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return count / (time.perf_counter() - started)

    def in_process() -> tuple[float, dict[str, Any]]:
        batcher = MicroBatcher(pipeline, max_wait_ms=wait_ms)

        async def run() -> float:
            await drive(lambda text: batcher.predict([text]))  # warm-up
            batcher.stats = type(batcher.stats)()
            rate = await drive(lambda text: batcher.predict([text]))
            await batcher.close()
            return rate

        rate = asyncio.run(run())
        return rate, batcher.stats.as_dict()

    registry = ModelRegistry()
    registry.add(pipeline)

    def over_http(on: bool) -> float:
        settings = Settings(microbatch=on, microbatch_wait_ms=wait_ms, max_concurrency=0)
        with BackgroundServer(registry, settings=settings) as server:
            url = f"/models/{pipeline.name}/predict"

            async def run() -> float:
                limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
                async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:

                    async def call(text: str) -> None:
                        (await client.post(url, json={"inputs": [text]})).raise_for_status()

                    await drive(call)  # warm-up: connections open
                    return await drive(call)

            return asyncio.run(run())

    offline()  # warm-up
    results: dict[str, Any] = {"clients": clients, "records": count, "batch": batch, "wait_ms": wait_ms}
    rates = {"offline_batch": offline()}
    rates["microbatch_in_process"], results["in_process_stats"] = in_process()
    rates["http_microbatch_on"] = over_http(True)
    rates["http_microbatch_off"] = over_http(False)
    results["records_per_s"] = rates
    results["fraction_of_offline"] = {k: v / rates["offline_batch"] for k, v in rates.items()}
    return results


def microbatch_lines(m: dict[str, Any]) -> list[str]:
    r, f, s = m["records_per_s"], m["fraction_of_offline"], m["in_process_stats"]
    return [
        "",
        f"## Micro-batching ({m['clients']} concurrent single-input requests, {m['records']} records, "
        f"wait {m['wait_ms']:g} ms)",
        "",
        "| path | records/s | of offline batch |",
        "|---|---|---|",
        f"| offline `predict`, batch {m['batch']} | {r['offline_batch']:.0f} | 100% |",
        f"| micro-batcher, in process | {r['microbatch_in_process']:.0f} | {f['microbatch_in_process']:.0%} |",
        f"| HTTP, `MAAS_MICROBATCH=true` | {r['http_microbatch_on']:.0f} | {f['http_microbatch_on']:.0%} |",
        f"| HTTP, micro-batching off | {r['http_microbatch_off']:.0f} | {f['http_microbatch_off']:.0%} |",
        "",
        f"In process the batcher ran {s['runs']} ORT runs for {s['requests']} requests "
        f"({s['mean_inputs_per_run']:.1f} inputs per run, largest {s['largest_run']}). Over HTTP the load "
        "generator shares this machine's CPUs with the server.",
    ]
