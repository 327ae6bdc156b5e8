"""Chunked inference with per-item isolation, shared by the S3 and SQS paths.

Items are packed into chunks of at most ``max_batch`` inputs with equal parameters and each chunk
is one ``pipeline.predict`` call (one ORT run). When a chunk is refused for a bad input (a
MaasError), only the bad item fails and its neighbours still get results: when the error names the
input (``param="inputs[k]"``, as the text pipelines do) that item is set aside and the rest rerun
(one extra call); otherwise the chunk is split in halves until the bad items stand alone
(O(log n) extra calls, not n). Any other
exception is a fault of the system, not of an item, and propagates to the caller.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from functions.errors import InvalidInputError, MaasError
from functions.inference.pipelines.base import Pipeline


@dataclass(frozen=True)
class WorkItem:
    """Inputs that succeed or fail together: one line of an S3 input, or one SQS message."""

    inputs: list[Any]
    parameters: dict[str, Any] | None = None

    @property
    def cost(self) -> int:
        """A padding-aware size proxy used to sort items before chunking."""
        return sum(len(x) if isinstance(x, str | bytes) else 1 for x in self.inputs)


@dataclass
class Outcome:
    outputs: list[Any] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    error: MaasError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class RunStats:
    predict_calls: int = 0
    input_tokens: int = 0


def run_items(
    pipeline: Pipeline, items: Sequence[WorkItem], stats: RunStats | None = None, *, sort_by_length: bool = True
) -> list[Outcome]:
    """One outcome per item, in the items' order."""
    stats = stats if stats is not None else RunStats()
    outcomes: list[Outcome | None] = [None] * len(items)
    max_batch = pipeline.limits.max_batch
    order = sorted(range(len(items)), key=lambda i: items[i].cost) if sort_by_length else range(len(items))
    groups: dict[str, list[int]] = {}
    for index in order:
        item = items[index]
        if not item.inputs:
            outcomes[index] = Outcome(error=InvalidInputError("inputs is empty: send at least one input"))
            continue
        if len(item.inputs) > max_batch:
            try:
                pipeline.check_batch(len(item.inputs))
            except MaasError as exc:
                outcomes[index] = Outcome(error=exc)
                continue
        groups.setdefault(_parameters_key(item.parameters), []).append(index)
    for indices in groups.values():
        chunk: list[int] = []
        size = 0
        for index in indices:
            n = len(items[index].inputs)
            if chunk and size + n > max_batch:
                _run_chunk(pipeline, items, chunk, outcomes, stats)
                chunk, size = [], 0
            chunk.append(index)
            size += n
        if chunk:
            _run_chunk(pipeline, items, chunk, outcomes, stats)
    missing = [i for i, outcome in enumerate(outcomes) if outcome is None]
    if missing:
        raise RuntimeError(f"no outcome for items {missing[:5]}: a bug in chunking")
    return [outcome for outcome in outcomes if outcome is not None]


def _parameters_key(parameters: dict[str, Any] | None) -> str:
    try:
        return json.dumps(parameters or {}, sort_keys=True)
    except (TypeError, ValueError):  # not JSON-able: give it a chunk of its own, predict will judge it
        return f"unhashable:{id(parameters)}"


def _run_chunk(
    pipeline: Pipeline, items: Sequence[WorkItem], chunk: list[int], outcomes: list[Outcome | None], stats: RunStats
) -> None:
    inputs = [x for index in chunk for x in items[index].inputs]
    stats.predict_calls += 1
    try:
        result = pipeline.predict(inputs, items[chunk[0]].parameters)
    except MaasError as exc:
        if len(chunk) == 1:
            outcomes[chunk[0]] = Outcome(error=_rebase(exc, items[chunk[0]], 0))
            return
        blamed = _blamed_item(exc, items, chunk)
        if blamed is not None:  # the pipeline named the input: fail its item, rerun the others
            index, offset = blamed
            outcomes[index] = Outcome(error=_rebase(exc, items[index], offset))
            _run_chunk(pipeline, items, [i for i in chunk if i != index], outcomes, stats)
            return
        middle = len(chunk) // 2  # no culprit named: bisect until the bad items stand alone
        _run_chunk(pipeline, items, chunk[:middle], outcomes, stats)
        _run_chunk(pipeline, items, chunk[middle:], outcomes, stats)
        return
    if len(result.outputs) != len(inputs):
        raise RuntimeError(f"{pipeline.name} returned {len(result.outputs)} outputs for {len(inputs)} inputs")
    stats.input_tokens += result.input_tokens
    truncated = result.truncated or [False] * len(inputs)
    start = 0
    for index in chunk:
        end = start + len(items[index].inputs)
        outcomes[index] = Outcome(outputs=result.outputs[start:end], truncated=truncated[start:end])
        start = end


_INPUT_PARAM = re.compile(r"^inputs\[(\d+)\]")


def _blamed_item(exc: MaasError, items: Sequence[WorkItem], chunk: list[int]) -> tuple[int, int] | None:
    """(item index, start of its inputs in the chunk) for an error whose ``param`` is ``inputs[k]``."""
    match = _INPUT_PARAM.match(exc.param or "")
    if match is None:
        return None
    position, start = int(match.group(1)), 0
    for index in chunk:
        size = len(items[index].inputs)
        if start <= position < start + size:
            return index, start
        start += size
    return None


def _rebase(exc: MaasError, item: WorkItem, offset: int) -> MaasError:
    """Make ``inputs[k]`` in the message point into the item the user sent, not into our chunk."""
    match = _INPUT_PARAM.match(exc.message)
    if match is not None:
        position = int(match.group(1)) - offset
        where = "input" if len(item.inputs) == 1 else f"inputs[{position}]"
        exc.message = where + exc.message[match.end():]
        exc.args = (exc.message,)
        exc.param = None if len(item.inputs) == 1 else where
    return exc
