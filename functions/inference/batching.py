"""The one batching core: many requests' inputs in few ORT runs, and a bad input never fails a neighbour.

Used by the S3 and SQS paths (:func:`run_items`, synchronous) and by the HTTP micro-batcher
(:class:`MicroBatcher`, asyncio), the same way:

1. **prepare each work item alone** (an S3 line, an SQS message, an HTTP request): validation, decoding,
   tokenization. Whatever goes wrong there — a :class:`MaasError` or any other exception — is that
   item's own error (4xx), and the item never reaches a run;
2. **merge** the prepared items whose parameters are equal, in runs of at most ``max_batch`` inputs;
3. **execute** each run once; should a run still be refused with a :class:`MaasError`, split it in halves
   until the refused items stand alone (O(log n) extra runs). Any other exception is a fault of the
   system, not of an item: it propagates (the S3 job is retried; the HTTP callers of that run get 500);
4. **finish** each item from its own slice of the run's outputs.

Dynamic INT8 models pick activation scales per run, so an input's vector can vary slightly (cosine
≥ 0.99) with the company it is batched in; fp32/fp16 artifacts are unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from functions.errors import InvalidInputError, MaasError
from functions.inference.pipelines.base import Capability, Pipeline, Prepared, TaskResult


@dataclass(frozen=True)
class WorkItem:
    """Inputs that succeed or fail together: one line of an S3 input, one SQS message, one HTTP request."""

    inputs: list[Any]
    parameters: Mapping[str, Any] | None = None


@dataclass
class Outcome:
    """One item's result or its error, never both."""

    result: TaskResult | None = None
    error: MaasError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def outputs(self) -> list[Any]:
        return self.result.outputs if self.result is not None else []

    @property
    def truncated(self) -> list[bool]:
        return self.result.truncated if self.result is not None else []


@dataclass
class RunStats:
    runs: int = 0  # execute calls
    items: int = 0
    inputs: int = 0
    largest_run: int = 0
    splits: int = 0  # runs split to isolate a refused item
    input_tokens: int = 0
    run_sizes: list[int] = field(default_factory=list)

    @property
    def predict_calls(self) -> int:
        return self.runs

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "requests": self.items,
            "inputs": self.inputs,
            "largest_run": self.largest_run,
            "mean_inputs_per_run": self.inputs / self.runs if self.runs else 0.0,
            "splits": self.splits,
        }


def prepare_item(pipeline: Pipeline[Any], item: WorkItem) -> Prepared[Any] | MaasError:
    """The item prepared, or its own error: any exception while reading it belongs to it alone."""
    if not item.inputs:
        return InvalidInputError("inputs is empty: send at least one input", param="inputs")
    try:
        return pipeline.prepare(item.inputs, item.parameters)
    except MaasError as exc:
        return exc
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return InvalidInputError(f"the input could not be read: {detail}", param="inputs")


def run_prepared(
    pipeline: Pipeline[Any], prepared: Sequence[Prepared[Any]], stats: RunStats | None = None, *, sort: bool = False
) -> list[Outcome]:
    """Execute prepared items in merged runs; one outcome per item, in order."""
    stats = stats if stats is not None else RunStats()
    outcomes: list[Outcome | None] = [None] * len(prepared)
    order = sorted(range(len(prepared)), key=lambda i: prepared[i].cost) if sort else range(len(prepared))
    groups: dict[str, list[int]] = {}
    for index in order:
        groups.setdefault(prepared[index].parameters.key(), []).append(index)
    max_batch = pipeline.limits.max_batch
    for indices in groups.values():
        run: list[int] = []
        size = 0
        for index in indices:
            n = prepared[index].size
            if run and size + n > max_batch:
                _execute(pipeline, prepared, run, outcomes, stats)
                run, size = [], 0
            run.append(index)
            size += n
        if run:
            _execute(pipeline, prepared, run, outcomes, stats)
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:
        raise RuntimeError(f"no outcome for items {missing[:5]}: a bug in batching")
    return [outcome for outcome in outcomes if outcome is not None]


def run_items(
    pipeline: Pipeline[Any], items: Sequence[WorkItem], stats: RunStats | None = None, *, sort_by_length: bool = True
) -> list[Outcome]:
    """Prepare every item alone, then run the good ones merged; one outcome per item, in the items' order."""
    stats = stats if stats is not None else RunStats()
    outcomes: list[Outcome] = []
    ready: list[tuple[int, Prepared[Any]]] = []
    for index, item in enumerate(items):
        prepared = prepare_item(pipeline, item)
        if isinstance(prepared, MaasError):
            outcomes.append(Outcome(error=prepared))
        else:
            outcomes.append(Outcome())
            ready.append((index, prepared))
    for (index, _), outcome in zip(
        ready, run_prepared(pipeline, [p for _, p in ready], stats, sort=sort_by_length), strict=True
    ):
        outcomes[index] = outcome
    for item, outcome in zip(items, outcomes, strict=True):
        if outcome.error is not None:
            _rebase(outcome.error, len(item.inputs))
    return outcomes


def predict(pipeline: Pipeline[Any], inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
    """One request run alone, under the same rules: any exception while reading an input is its 4xx."""
    prepared = prepare_item(pipeline, WorkItem(inputs, parameters))
    if isinstance(prepared, MaasError):
        raise prepared
    (outcome,) = run_prepared(pipeline, [prepared])
    if outcome.error is not None:
        raise outcome.error
    assert outcome.result is not None
    return outcome.result


def _execute(
    pipeline: Pipeline[Any],
    prepared: Sequence[Prepared[Any]],
    run: list[int],
    outcomes: list[Outcome | None],
    stats: RunStats,
) -> None:
    features = [feature for index in run for feature in prepared[index].features]
    parameters = prepared[run[0]].parameters
    stats.runs += 1
    stats.items += len(run)
    stats.inputs += len(features)
    stats.largest_run = max(stats.largest_run, len(features))
    stats.run_sizes.append(len(features))
    try:
        outputs = pipeline.execute(features, parameters)
    except MaasError as exc:
        if len(run) == 1:
            outcomes[run[0]] = Outcome(error=exc)
            return
        stats.splits += 1  # one item's input must not fail its neighbours: isolate it
        middle = len(run) // 2
        _execute(pipeline, prepared, run[:middle], outcomes, stats)
        _execute(pipeline, prepared, run[middle:], outcomes, stats)
        return
    if len(outputs) != len(features):
        raise RuntimeError(f"{pipeline.name} returned {len(outputs)} outputs for {len(features)} inputs")
    start = 0
    for index in run:
        item = prepared[index]
        result = pipeline.finish(list(outputs[start : start + item.size]), item)
        stats.input_tokens += result.input_tokens
        outcomes[index] = Outcome(result=result)
        start += item.size


_INPUT_PARAM = re.compile(r"^inputs\[0\]")


def _rebase(exc: MaasError, size: int) -> MaasError:
    """An item of one input is "the input", not ``inputs[0]`` (S3 lines and SQS messages carry one input)."""
    if size == 1 and _INPUT_PARAM.match(exc.message):
        exc.message = "input" + exc.message[len("inputs[0]") :]
        exc.args = (exc.message,)
        exc.param = None
    return exc


# --- the HTTP micro-batcher ------------------------------------------------------------------------------
@dataclass
class _Pending:
    prepared: Prepared[Any]
    future: asyncio.Future[TaskResult]


class MicroBatcher:
    """Concurrent requests to one model share ORT runs; use one per model per event loop.

    Each request is prepared alone in a worker thread (its errors are its own), then queued. One collector
    task per model takes what is queued — waiting up to ``max_wait_ms`` after the first arrival for more,
    never past ``max_batch`` inputs — and runs :func:`run_prepared` on the group in a worker thread. Runs
    of one model are serialised, which on a CPU also keeps ORT's intra-op threads from oversubscribing.
    Lambda serves one request per execution environment, so micro-batching is off there by default
    (``MAAS_MICROBATCH``); the GPU container turns it on.
    """

    def __init__(self, pipeline: Pipeline[Any], *, max_wait_ms: float = 2.0, max_batch: int | None = None) -> None:
        self.pipeline = pipeline
        self.max_wait_s = max(0.0, max_wait_ms) / 1000
        self.max_batch = max(1, max_batch or pipeline.limits.max_batch)
        self.stats = RunStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def predict(self, inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        prepared = await run_in_threadpool(prepare_item, self.pipeline, WorkItem(inputs, parameters))
        if isinstance(prepared, MaasError):
            raise prepared  # this request's own error; it never reaches a run
        if prepared.size >= self.max_batch or not self.pipeline.has(Capability.MERGEABLE):
            return await run_in_threadpool(self._alone, prepared)
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._loop is not loop:
            self._loop, self._queue = loop, asyncio.Queue()
            self._worker = loop.create_task(self._collect(self._queue), name=f"microbatch:{self.pipeline.name}")
        future: asyncio.Future[TaskResult] = loop.create_future()
        await self._queue.put(_Pending(prepared, future))
        return await future

    def _alone(self, prepared: Prepared[Any]) -> TaskResult:
        (outcome,) = run_prepared(self.pipeline, [prepared], self.stats)
        if outcome.error is not None:
            raise outcome.error
        assert outcome.result is not None
        return outcome.result

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
            group, size = [first], first.prepared.size
            key = first.prepared.parameters.key()
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
                if nxt.prepared.parameters.key() != key or size + nxt.prepared.size > self.max_batch:
                    carry = nxt  # starts the next group
                    break
                group.append(nxt)
                size += nxt.prepared.size
            await self._run(group)

    async def _run(self, group: list[_Pending]) -> None:
        group = [p for p in group if not p.future.cancelled()]
        if not group:
            return
        try:
            outcomes = await run_in_threadpool(run_prepared, self.pipeline, [p.prepared for p in group], self.stats)
        except Exception as exc:  # a system fault: every caller of this run gets it (a 500 each), none waits
            for pending in group:
                _settle(pending.future, error=exc)
            return
        for pending, outcome in zip(group, outcomes, strict=True):
            _settle(pending.future, result=outcome.result, error=outcome.error)


def _settle(
    future: asyncio.Future[TaskResult], *, result: TaskResult | None = None, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    elif result is not None:
        future.set_result(result)
