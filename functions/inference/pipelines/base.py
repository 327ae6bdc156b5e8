"""The pipeline contract: prepare → execute → finish, plus the capabilities a protocol may rely on.

- :meth:`Pipeline.prepare` turns one request's inputs into features (validated, tokenized or decoded).
  Everything that can go wrong because of an input goes wrong here, and only as that input's own error
  (a :class:`MaasError` with a 4xx status naming it): an unexpected exception while decoding or encoding
  an input is reported as :class:`InvalidInputError`, never as a fault of the server or of a neighbour.
- :meth:`Pipeline.execute` runs the graph over a list of features — possibly from several requests with
  equal parameters (the batching core merges them) — and returns one model output per feature.
- :meth:`Pipeline.finish` turns one request's model outputs into the task API's outputs.

Protocols never branch on a pipeline's class: they read :attr:`Pipeline.capabilities`.

Work for a caller that went away stops: the HTTP layer runs each request under :func:`cancellation` with an
event it sets on disconnect, and pipelines call :func:`check_cancelled` between inputs (and generation between
tokens). The event travels in a context variable, which worker threads inherit from the request.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from functions.contract import Limits, Manifest, Task
from functions.errors import ClientDisconnectedError, InvalidInputError, MaasError, PayloadTooLargeError
from functions.inference.session import create_session

P = TypeVar("P", bound="TaskParameters")
T = TypeVar("T")
_CANCELLED: ContextVar[threading.Event | None] = ContextVar("maas_cancelled", default=None)


@contextmanager
def cancellation(event: threading.Event) -> Iterator[None]:
    """Run the work inside (and the worker threads it starts) under ``event``: once set, the work stops."""
    token = _CANCELLED.set(event)
    try:
        yield
    finally:
        _CANCELLED.reset(token)


def is_cancelled() -> bool:
    """True once the caller of the current request went away."""
    event = _CANCELLED.get()
    return event is not None and event.is_set()


def check_cancelled() -> None:
    """Stop working for a caller that went away (:class:`ClientDisconnectedError`, nginx's 499)."""
    if is_cancelled():
        raise ClientDisconnectedError("the client disconnected; the request was abandoned")


class Capability(StrEnum):
    """What a pipeline offers, as the protocols see it."""

    TEXT_INPUT = "text-input"  # inputs are strings
    IMAGE_INPUT = "image-input"  # inputs are encoded images (or preprocessed pixel tensors)
    EMBED = "embed"  # one vector per input
    CLASSIFY = "classify"  # class probabilities per input, with labels
    GENERATE = "generate"  # a decoder-only LM: prompts, chat, streaming
    TRANSLATE = "translate"  # a sequence-to-sequence model
    MERGEABLE = "mergeable"  # an input's output does not depend on its batch neighbours' parameters


class TaskParameters(BaseModel):
    """Base for each task's ``parameters`` object; unknown keys are refused so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def key(self) -> str:
        """Requests whose parameters have equal keys may share one run."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


@dataclass
class Prepared(Generic[P]):
    """One request's inputs, ready to run: one feature per input, in order."""

    features: list[Any]
    parameters: P
    token_counts: list[int] = field(default_factory=list)  # per input, where the task has tokens
    truncated: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.truncated:
            self.truncated = [False] * len(self.features)

    @property
    def size(self) -> int:
        return len(self.features)

    @property
    def cost(self) -> int:
        """A padding-aware size, used to sort requests before batching (less padding)."""
        return max(self.token_counts, default=0) or len(self.features)


@dataclass
class TaskResult:
    outputs: list[Any]
    input_tokens: int = 0
    truncated: list[bool] = field(default_factory=list)
    input_token_counts: list[int] = field(default_factory=list)  # per input, where the task has tokens
    output_tokens: int = 0


def input_error(index: int, exc: BaseException, what: str = "input") -> MaasError:
    """An exception raised while reading ``inputs[index]``, as that input's own 4xx."""
    if isinstance(exc, MaasError):
        return exc
    detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return InvalidInputError(f"inputs[{index}] could not be read as {what}: {detail}", param=f"inputs[{index}]")


class Pipeline(ABC, Generic[P]):
    task: ClassVar[Task]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
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
        self.intra_op_threads = intra_op_threads
        self.providers = providers
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
    def limits(self) -> Limits:
        return self.manifest.limits

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run the graph, feeding only the inputs it declares (exports may drop unused ones)."""
        outputs = self.session.run(None, {name: feeds[name] for name in self.input_names})
        return [np.asarray(o) for o in outputs]

    def parse_parameters(self, parameters: Mapping[str, Any] | None) -> P:
        try:
            return self.parameters_model.model_validate(dict(parameters or {}))  # type: ignore[return-value]
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
        if count < 1:
            raise InvalidInputError("inputs is empty: send at least one input", param="inputs")

    def check_each(self, inputs: Sequence[Any], read: Callable[[int, Any], T], what: str) -> list[T]:
        """``read`` every input; the first that fails is reported as that input's 4xx, whatever it raised."""
        values: list[T] = []
        for index, item in enumerate(inputs):
            check_cancelled()
            try:
                values.append(read(index, item))
            except Exception as exc:
                raise input_error(index, exc, what) from exc
        return values

    # --- the three steps ---------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None) -> Prepared[P]:
        """Validate and pre-process one request's inputs; input problems only, as 4xx errors."""

    @abstractmethod
    def execute(self, features: Sequence[Any], parameters: P) -> list[Any]:
        """Run the model over ``features`` (one or more requests' worth); one model output per feature."""

    @abstractmethod
    def finish(self, outputs: list[Any], prepared: Prepared[P]) -> TaskResult:
        """One request's model outputs as the task API's outputs."""

    def predict(self, inputs: Sequence[Any], parameters: Mapping[str, Any] | None = None) -> TaskResult:
        """The task API: a list of inputs in, one output per input (same order)."""
        prepared = self.prepare(inputs, parameters)
        return self.finish(self.execute(prepared.features, prepared.parameters), prepared)

    @abstractmethod
    def warmup(self) -> None: ...
