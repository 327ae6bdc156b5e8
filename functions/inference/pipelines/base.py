"""The pipeline contract: preprocess → session.run → postprocess, one subclass per task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from functions.contract import Manifest, Task
from functions.errors import InvalidInputError, PayloadTooLargeError
from functions.inference.session import create_session


class TaskParameters(BaseModel):
    """Base for each task's ``parameters`` object; unknown keys are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TaskResult:
    outputs: list[Any]
    input_tokens: int = 0
    truncated: list[bool] = field(default_factory=list)
    input_token_counts: list[int] = field(default_factory=list)  # per input, where the task has tokens


@dataclass(frozen=True)
class TensorMeta:
    """A tensor as the Open Inference Protocol describes it."""

    name: str
    datatype: str
    shape: list[int]


def classifier_outputs(labels: list[str]) -> list[TensorMeta]:
    """OIP outputs of every classifier (text or image): best label, its score, all probabilities."""
    return [
        TensorMeta("label", "BYTES", [-1]),
        TensorMeta("score", "FP32", [-1]),
        TensorMeta("probabilities", "FP32", [-1, len(labels)]),
    ]


class Pipeline(ABC):
    task: ClassVar[Task]
    parameters_model: ClassVar[type[TaskParameters]] = TaskParameters
    # Token-by-token decoders run hundreds of short ORT runs back to back: their threads spin between runs.
    spin_threads: ClassVar[bool] = False

    def __init__(
        self,
        directory: Path,
        manifest: Manifest,
        *,
        intra_op_threads: int = 0,
        providers: list[str] | None = None,
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.session = create_session(
            directory / manifest.model_file,
            intra_op_threads=intra_op_threads,
            providers=providers,
            spinning=self.spin_threads,
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def limits(self) -> Any:
        return self.manifest.limits

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph, feeding only the inputs it declares (exports may drop unused ones)."""
        outputs = self.session.run(None, {name: feeds[name] for name in self.input_names})
        return [np.asarray(o) for o in outputs]

    def parse_parameters(self, parameters: Mapping[str, Any] | None) -> Any:
        try:
            return self.parameters_model.model_validate(dict(parameters or {}))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(
                f"parameters.{where}: {first['msg']}", param=f"parameters.{where}", details=exc.errors()
            ) from exc

    def check_batch(self, count: int) -> None:
        if count > self.limits.max_batch:
            raise PayloadTooLargeError(
                f"{count} inputs in one request; {self.name} accepts at most {self.limits.max_batch}. "
                "Split the request",
                param="inputs",
            )

    @abstractmethod
    def predict(self, inputs: list[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        """The task API: a list of inputs in, one output per input (same order)."""

    @abstractmethod
    def oip_inputs(self) -> list[TensorMeta]: ...

    @abstractmethod
    def oip_outputs(self) -> list[TensorMeta]: ...

    @abstractmethod
    def infer_tensors(
        self, tensors: Mapping[str, np.ndarray], parameters: Mapping[str, Any] | None = None
    ) -> dict[str, np.ndarray]:
        """The Open Inference Protocol: named tensors in, named tensors out."""

    @abstractmethod
    def warmup(self) -> None: ...
