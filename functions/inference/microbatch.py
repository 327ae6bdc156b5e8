"""Dynamic micro-batching: concurrent requests to one model share one ONNX Runtime run.

A server that takes many small requests at once (the GPU container, `maas serve` under load) wastes
the accelerator running them one by one. ``MicroBatcher`` queues each request's inputs; one collector
task per model takes what is queued — waiting up to ``max_wait_ms`` after the first arrival for more,
never past ``max_batch`` inputs — runs ``pipeline.predict`` once on the concatenation, and hands each
caller its own slice of the outputs (and its own token count). Runs of one model are serialised,
which on a CPU is also what keeps ORT's intra-op threads from oversubscribing the cores.

- Requests merge only with requests that carry the same parameters.
- A request larger than ``max_batch`` runs alone (and gets the pipeline's own limit error).
- If a merged run fails with a client error (one caller's bad input), every request of that group is
  re-run alone, so each caller gets its own answer or its own error — never a neighbour's.
- Pipelines that return per-input token counts (text) give each caller exact usage figures.

INT8 models with dynamic activation quantization compute one scale per run, so an input's vector can
vary slightly (cosine ≥ 0.99) with the company it is batched in; fp32/fp16 artifacts are unaffected.
Lambda serves one request per execution environment, so micro-batching is off there by default
(``MAAS_MICROBATCH``); the GPU container turns it on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from functions.errors import MaasError
from functions.inference.pipelines.base import Pipeline, TaskResult


@dataclass
class _Pending:
    inputs: list[Any]
    parameters: Mapping[str, Any] | None
    key: str
    future: asyncio.Future[TaskResult]


@dataclass
class BatcherStats:
    runs: int = 0
    requests: int = 0
    inputs: int = 0
    largest_run: int = 0
    fallbacks: int = 0
    run_sizes: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "requests": self.requests,
            "inputs": self.inputs,
            "largest_run": self.largest_run,
            "mean_inputs_per_run": self.inputs / self.runs if self.runs else 0.0,
            "fallbacks": self.fallbacks,
        }


def _parameters_key(parameters: Mapping[str, Any] | None) -> str:
    try:
        return json.dumps(parameters or {}, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return f"unmergeable:{id(parameters)}"


class MicroBatcher:
    """Groups concurrent ``predict`` calls on one pipeline; use one per model per event loop."""

    def __init__(self, pipeline: Pipeline, *, max_wait_ms: float = 2.0, max_batch: int | None = None) -> None:
        self.pipeline = pipeline
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self.max_batch = max(1, max_batch or pipeline.limits.max_batch)
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def predict(self, inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        if len(inputs) >= self.max_batch or not inputs:  # nothing to gain, or the pipeline's own error
            return await run_in_threadpool(self.pipeline.predict, inputs, parameters)
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._collect(self._queue), name=f"microbatch:{self.pipeline.name}")
        future: asyncio.Future[TaskResult] = loop.create_future()
        await self._queue.put(_Pending(list(inputs), parameters, _parameters_key(parameters), future))
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def _collect(self, queue: asyncio.Queue[_Pending]) -> None:
        carry: _Pending | None = None
        while True:
            first = carry or await queue.get()
            carry = None
            group, size = [first], len(first.inputs)
            deadline = time.perf_counter() + self.max_wait_s
            while size < self.max_batch:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(queue.get(), remaining)
                    except TimeoutError:
                        break
                if nxt.key != first.key or size + len(nxt.inputs) > self.max_batch:
                    carry = nxt  # starts the next group
                    break
                group.append(nxt)
                size += len(nxt.inputs)
            try:
                await self._run(group)
            except Exception as exc:  # never leave a caller waiting: a bug here fails its requests, not the loop
                for pending in group:
                    _settle(pending.future, error=exc)

    async def _run(self, group: list[_Pending]) -> None:
        group = [p for p in group if not p.future.cancelled()]
        if not group:
            return
        merged = [x for p in group for x in p.inputs]
        self.stats.runs += 1
        self.stats.requests += len(group)
        self.stats.inputs += len(merged)
        self.stats.largest_run = max(self.stats.largest_run, len(merged))
        try:
            result = await run_in_threadpool(self.pipeline.predict, merged, group[0].parameters)
        except MaasError as exc:
            if len(group) == 1:
                _settle(group[0].future, error=exc)
                return
            self.stats.fallbacks += 1  # one caller's bad input must not fail its neighbours
            for pending in group:
                try:
                    alone = await run_in_threadpool(self.pipeline.predict, pending.inputs, pending.parameters)
                except Exception as single_exc:
                    _settle(pending.future, error=single_exc)
                else:
                    _settle(pending.future, result=alone)
            return
        except Exception as exc:  # a system fault: every caller of this run gets it (a 500 each)
            for pending in group:
                _settle(pending.future, error=exc)
            return
        for pending, part in zip(group, split_result(result, [len(p.inputs) for p in group]), strict=True):
            _settle(pending.future, result=part)


def split_result(result: TaskResult, sizes: list[int]) -> list[TaskResult]:
    """Cut a merged result back into one result per request, in order."""
    if len(result.outputs) != sum(sizes):
        raise RuntimeError(f"the model returned {len(result.outputs)} outputs for {sum(sizes)} merged inputs")
    parts, start = [], 0
    counts = result.input_token_counts
    for size in sizes:
        end = start + size
        tokens = sum(counts[start:end]) if counts else (result.input_tokens if len(sizes) == 1 else 0)
        parts.append(
            TaskResult(
                outputs=result.outputs[start:end],
                input_tokens=tokens,
                truncated=result.truncated[start:end] if result.truncated else [],
                input_token_counts=counts[start:end] if counts else [],
            )
        )
        start = end
    return parts


def _settle(
    future: asyncio.Future[TaskResult], *, result: TaskResult | None = None, error: Exception | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)
