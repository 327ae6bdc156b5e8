"""A tiny deterministic pipeline for scale tests of the batch paths (no model: what is measured is maas's own
record path, S3 traffic and memory, at a million lines on two cores).

``tiny_registry`` is importable by module path, so a process pool (spawned, as ``maas_dev.batch_local`` does)
can install the same registry in every worker."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from functions.contract import Limits
from functions.errors import InvalidInputError
from functions.inference.pipelines.base import Capability, Prepared, TaskParameters, TaskResult
from functions.inference.registry import ModelRegistry

MODEL = "tiny-embed"


class TinyParameters(TaskParameters):
    pass


class TinyPipeline:
    """A 16-number "embedding" per text (its length, word count, and its CRC32 in 14 slices: output lines of ~120
    bytes, so outputs outgrow inputs as real embeddings do, if less). Non-strings are that line's
    error (as a real text model refuses them). ``MAAS_TEST_STALL_ON=<text>`` makes the run that holds that text
    sleep, so a test can kill a chunk while it works."""

    name = MODEL
    capabilities = frozenset({Capability.TEXT_INPUT, Capability.MERGEABLE, Capability.EMBED})

    def __init__(self, max_batch: int = 32) -> None:
        self.limits = Limits(max_batch=max_batch)
        self.manifest = SimpleNamespace(version="tiny0000tiny0000", name=MODEL)

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def prepare(self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None) -> Prepared[Any]:
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                raise InvalidInputError(f"inputs[{index}] must be a string, got {type(item).__name__}",
                                        param=f"inputs[{index}]")
        return Prepared(list(inputs), TinyParameters.model_validate(dict(parameters or {})),
                        [len(x.split()) for x in inputs])

    def execute(self, features: Sequence[str], parameters: TinyParameters) -> list[list[int]]:
        stall = os.environ.get("MAAS_TEST_STALL_ON")
        if stall and stall in features:
            time.sleep(3600)
        crash, flag = os.environ.get("MAAS_TEST_CRASH_ONCE_ON"), os.environ.get("MAAS_TEST_CRASH_FLAG", "")
        if crash and crash in features and flag and not os.path.exists(flag):
            open(flag, "w").close()  # a marker: the next attempt, in any process, succeeds
            raise RuntimeError("onnxruntime exploded")  # a fault of the system, not of a record
        return [embedding(x) for x in features]

    def finish(self, outputs: list[Any], prepared: Prepared[Any]) -> TaskResult:
        return TaskResult(outputs, sum(prepared.token_counts), prepared.truncated, prepared.token_counts)


def embedding(text: str) -> list[int]:
    crc = zlib.crc32(text.encode())
    return [len(text), len(text.split()), *((crc >> shift) & 0xFFFF for shift in range(14))]


def tiny_registry() -> ModelRegistry:
    registry = ModelRegistry()
    registry.add(TinyPipeline())  # type: ignore[arg-type]
    return registry
