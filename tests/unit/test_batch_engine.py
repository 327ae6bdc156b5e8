"""The batching core: few runs, input order kept, a bad item never fails its neighbours (S3/SQS and HTTP alike)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from functions.contract import Limits
from functions.errors import InvalidInputError, PayloadTooLargeError
from functions.inference.batching import MicroBatcher, RunStats, WorkItem, run_items
from functions.inference.pipelines.base import Capability, Prepared, TaskParameters, TaskResult


class ShoutParameters(TaskParameters):
    shout: bool = False


class FakePipeline:
    """Upper-cases strings. ``prepare`` reads each input (a non-string is that input's error, an input equal to
    ``garbled`` raises a plain exception, as a decoder would); ``execute`` may refuse or crash on given inputs."""

    name = "fake"
    capabilities = frozenset({Capability.TEXT_INPUT, Capability.MERGEABLE})

    def __init__(self, max_batch: int = 4, crash_on: str | None = None, refuse_in_run: str | None = None) -> None:
        self.limits = Limits(max_batch=max_batch)
        self.runs: list[list[Any]] = []
        self.crash_on = crash_on
        self.refuse_in_run = refuse_in_run

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def prepare(self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None) -> Prepared[Any]:
        if len(inputs) > self.limits.max_batch:
            raise PayloadTooLargeError(f"{len(inputs)} inputs; at most {self.limits.max_batch}")
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidInputError(f"inputs[{index}] must be a string, got {type(item).__name__}",
                                        param=f"inputs[{index}]")
            if item == "garbled":
                raise UnicodeEncodeError("utf-8", item, 0, 1, "surrogates not allowed")
        return Prepared(list(inputs), ShoutParameters.model_validate(dict(parameters or {})), [len(x) for x in inputs])

    def execute(self, features: Sequence[str], parameters: ShoutParameters) -> list[str]:
        self.runs.append(list(features))
        if self.refuse_in_run in features:
            raise InvalidInputError("the model refused an input")
        if self.crash_on in features:
            raise RuntimeError("onnxruntime exploded")
        return [x.upper() + ("!" if parameters.shout else "") for x in features]

    def finish(self, outputs: list[str], prepared: Prepared[Any]) -> TaskResult:
        return TaskResult(outputs, sum(prepared.token_counts), prepared.truncated, prepared.token_counts)


def test_outputs_keep_item_order_and_runs_respect_max_batch():
    pipeline = FakePipeline(max_batch=4)
    items = [WorkItem(["x" * (10 - i % 7) + str(i)]) for i in range(10)]
    stats = RunStats()
    outcomes = run_items(pipeline, items, stats)  # type: ignore[arg-type]
    assert [o.outputs[0] for o in outcomes] == [item.inputs[0].upper() for item in items]
    assert all(len(run) <= 4 for run in pipeline.runs)
    assert stats.runs == len(pipeline.runs) == 3


def test_a_bad_item_is_refused_before_any_run_and_fails_alone():
    # GIVEN a full batch of 32 with one non-string input and one that makes the decoder raise
    pipeline = FakePipeline(max_batch=32)
    items = [WorkItem([f"t{i}"]) for i in range(32)]
    items[17] = WorkItem([17])
    items[5] = WorkItem(["garbled"])
    outcomes = run_items(pipeline, items, sort_by_length=False)  # type: ignore[arg-type]
    # THEN only those items fail, each with its own 4xx, and the 30 others share one run
    assert [i for i, o in enumerate(outcomes) if not o.ok] == [5, 17]
    assert outcomes[17].error.message == "input must be a string, got int"
    assert outcomes[5].error.status_code == 422 and "could not be read" in outcomes[5].error.message
    assert all(o.outputs == [f"T{i}"] for i, o in enumerate(outcomes) if i not in (5, 17))
    assert len(pipeline.runs) == 1 and len(pipeline.runs[0]) == 30


def test_an_item_the_model_refuses_mid_run_is_isolated_by_splitting():
    pipeline = FakePipeline(max_batch=32, refuse_in_run="t9")
    items = [WorkItem([f"t{i}"]) for i in range(32)]
    stats = RunStats()
    outcomes = run_items(pipeline, items, stats, sort_by_length=False)  # type: ignore[arg-type]
    assert [i for i, o in enumerate(outcomes) if not o.ok] == [9]
    assert len(pipeline.runs) <= 1 + 2 * 5  # O(log n) extra runs, never one per item
    assert stats.splits >= 1


def test_multi_input_items_succeed_or_fail_together():
    pipeline = FakePipeline(max_batch=4)
    items = [WorkItem(["a", "b"]), WorkItem(["c", 3]), WorkItem(["d", "e", "f"]), WorkItem(["g"] * 5), WorkItem([])]
    outcomes = run_items(pipeline, items)  # type: ignore[arg-type]
    assert outcomes[0].outputs == ["A", "B"] and outcomes[2].outputs == ["D", "E", "F"]
    assert outcomes[1].error.code == "invalid_input"
    assert outcomes[1].error.message == "inputs[1] must be a string, got int"  # its index in the item
    assert outcomes[3].error.code == "payload_too_large"  # more inputs than max_batch: never sent
    assert outcomes[4].error.message.startswith("inputs is empty")


def test_items_with_different_parameters_run_in_separate_runs():
    pipeline = FakePipeline(max_batch=8)
    items = [WorkItem(["a"], {"shout": True}), WorkItem(["b"]), WorkItem(["c"], {"shout": True})]
    outcomes = run_items(pipeline, items)  # type: ignore[arg-type]
    assert [o.outputs for o in outcomes] == [["A!"], ["B"], ["C!"]]
    assert sorted(len(run) for run in pipeline.runs) == [1, 2]


def test_a_system_fault_is_not_blamed_on_an_item():
    pipeline = FakePipeline(crash_on="boom")
    with pytest.raises(RuntimeError, match="exploded"):
        run_items(pipeline, [WorkItem(["ok"]), WorkItem(["boom"])])  # type: ignore[arg-type]


def test_the_micro_batcher_isolates_a_poison_request_among_30_good_ones():
    """The HTTP path shares the core: 30 good requests and one whose input the decoder cannot read, merged."""
    pipeline = FakePipeline(max_batch=64)
    batcher = MicroBatcher(pipeline, max_wait_ms=50)  # type: ignore[arg-type]

    async def concurrently() -> list[Any]:
        calls = [batcher.predict([f"good {i}"]) for i in range(30)] + [batcher.predict(["garbled"])]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(concurrently())
    assert [r.outputs for r in results[:30]] == [[f"GOOD {i}"] for i in range(30)]
    assert isinstance(results[30], InvalidInputError) and results[30].status_code == 422
    assert batcher.stats.runs < 30  # the good ones still shared runs
