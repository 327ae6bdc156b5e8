"""Chunked inference: few predict calls, input order kept, a bad item never fails its neighbours."""

from __future__ import annotations

from typing import Any

import pytest

from functions.batch.engine import RunStats, WorkItem, run_items
from functions.contract import Limits
from functions.errors import InvalidInputError, PayloadTooLargeError
from functions.inference.pipelines.base import TaskResult


class FakePipeline:
    """Upper-cases strings; refuses the whole call if any input is not a string (as text pipelines do)."""

    name = "fake"

    def __init__(self, max_batch: int = 4, crash_on: str | None = None, names_culprit: bool = False) -> None:
        self.limits = Limits(max_batch=max_batch)
        self.names_culprit = names_culprit
        self.calls: list[list[Any]] = []
        self.crash_on = crash_on

    def check_batch(self, count: int) -> None:
        if count > self.limits.max_batch:
            raise PayloadTooLargeError(f"{count} inputs; at most {self.limits.max_batch}")

    def predict(self, inputs: list[Any], parameters: dict[str, Any] | None = None) -> TaskResult:
        self.calls.append(list(inputs))
        self.check_batch(len(inputs))
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidInputError(f"inputs[{index}] must be a string, got {type(item).__name__}",
                                        param=f"inputs[{index}]" if self.names_culprit else None)
            if item == self.crash_on:
                raise RuntimeError("onnxruntime exploded")
        suffix = "!" if (parameters or {}).get("shout") else ""
        outputs = [x.upper() + suffix for x in inputs]
        return TaskResult(outputs, input_tokens=len(inputs), truncated=[False] * len(inputs))


def test_outputs_keep_item_order_and_chunks_respect_max_batch():
    pipeline = FakePipeline(max_batch=4)
    items = [WorkItem(["x" * (10 - i % 7) + str(i)]) for i in range(10)]
    stats = RunStats()
    outcomes = run_items(pipeline, items, stats)
    assert [o.outputs[0] for o in outcomes] == [item.inputs[0].upper() for item in items]
    assert all(len(call) <= 4 for call in pipeline.calls)
    assert stats.predict_calls == len(pipeline.calls) == 3


@pytest.mark.parametrize(("names_culprit", "max_calls"), [(True, 2), (False, 1 + 2 * 5)])
def test_a_bad_item_fails_alone_in_few_calls(names_culprit, max_calls):
    # GIVEN a full chunk of 32 with one non-string input
    pipeline = FakePipeline(max_batch=32, names_culprit=names_culprit)
    items = [WorkItem([f"t{i}"]) for i in range(32)]
    items[17] = WorkItem([17])
    outcomes = run_items(pipeline, items, sort_by_length=False)
    # THEN only that item fails, with a message about it (not about a chunk index)
    assert [i for i, o in enumerate(outcomes) if not o.ok] == [17]
    assert outcomes[17].error.message == "input must be a string, got int"
    assert all(o.outputs == [f"T{i}"] for i, o in enumerate(outcomes) if i != 17)
    # a named culprit costs one rerun; otherwise bisection costs O(log n) calls, never one per item
    assert len(pipeline.calls) <= max_calls


def test_multi_input_items_succeed_or_fail_together():
    pipeline = FakePipeline(max_batch=4, names_culprit=True)
    items = [WorkItem(["a", "b"]), WorkItem(["c", 3]), WorkItem(["d", "e", "f"]), WorkItem(["g"] * 5), WorkItem([])]
    outcomes = run_items(pipeline, items)
    assert outcomes[0].outputs == ["A", "B"] and outcomes[2].outputs == ["D", "E", "F"]
    assert outcomes[1].error.code == "invalid_input"
    assert outcomes[1].error.message == "inputs[1] must be a string, got int"  # its index in the item
    assert outcomes[3].error.code == "payload_too_large"  # more inputs than max_batch: never sent
    assert outcomes[4].error.message.startswith("inputs is empty")


def test_items_with_different_parameters_run_in_separate_calls():
    pipeline = FakePipeline(max_batch=8)
    items = [WorkItem(["a"], {"shout": True}), WorkItem(["b"]), WorkItem(["c"], {"shout": True})]
    outcomes = run_items(pipeline, items)
    assert [o.outputs for o in outcomes] == [["A!"], ["B"], ["C!"]]
    assert sorted(len(c) for c in pipeline.calls) == [1, 2]


def test_a_system_fault_is_not_blamed_on_an_item():
    pipeline = FakePipeline(crash_on="boom")
    with pytest.raises(RuntimeError, match="exploded"):
        run_items(pipeline, [WorkItem(["ok"]), WorkItem(["boom"])])
