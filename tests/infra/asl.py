"""A static check of an Amazon States Language definition (JSONPath), with the rules of the Distributed Map.

cfn-lint (E3601, run on every template by test_compliance.py) validates the definition's general shape against
its schema; that schema takes a Map's ``ItemReader``, ``ItemBatcher``, ``ResultWriter`` and ``ProcessorConfig``
as any object. This adds what the service checks at CreateStateMachine (from the States Language spec and the
Step Functions developer guide's pages on the Map state in distributed mode): transitions, reachability, retriers,
paths, and for a Map: distributed-only fields only in DISTRIBUTED mode, a child execution type, the S3 reader and
writer integrations and their parameters, the batcher's limits, the failure tolerance and concurrency ranges.
:func:`problems` returns every violation as a readable line (empty: valid).
"""

from __future__ import annotations

from typing import Any

TERMINAL = {"Succeed", "Fail"}
STATE_TYPES = {"Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map"}
READER_TYPES = {"CSV", "JSON", "JSONL", "MANIFEST", "PARQUET"}
READER_RESOURCES = {"arn:aws:states:::s3:getObject", "arn:aws:states:::s3:listObjectsV2"}
LABEL_FORBIDDEN = set("<>{}[]?*\"#%\\^|~`$&,;:/")
DISTRIBUTED_ONLY = ("ItemReader", "ItemBatcher", "ResultWriter", "ToleratedFailurePercentage",
                    "ToleratedFailureCount", "Label")


def problems(definition: dict[str, Any]) -> list[str]:
    found: list[str] = []
    _machine(definition, "", found, top=True)
    return found


def _machine(machine: dict[str, Any], where: str, found: list[str], *, top: bool = False) -> None:
    states = machine.get("States")
    start = machine.get("StartAt")
    if not isinstance(states, dict) or not states:
        found.append(f"{where or '/'}: States must be a non-empty object")
        return
    if start not in states:
        found.append(f"{where}/StartAt: {start!r} is not a state")
    if top and "TimeoutSeconds" in machine and not 1 <= machine["TimeoutSeconds"] <= 99_999_999:
        found.append(f"{where}/TimeoutSeconds out of range")
    for name, state in states.items():
        _state(name, state, states, f"{where}/States/{name}", found)
    reached, queue = set(), [start]
    while queue:
        name = queue.pop()
        if name in reached or name not in states:
            continue
        reached.add(name)
        state = states[name]
        queue += [state.get("Next"), state.get("Default")]
        queue += [c.get("Next") for c in state.get("Choices", []) + state.get("Catch", [])]
    for name in set(states) - reached:
        found.append(f"{where}/States/{name}: unreachable from StartAt")


def _state(name: str, state: dict[str, Any], states: dict[str, Any], where: str, found: list[str]) -> None:
    kind = state.get("Type")
    if kind not in STATE_TYPES:
        found.append(f"{where}: unknown Type {kind!r}")
        return
    if len(name) > 80:
        found.append(f"{where}: state names are at most 80 characters")
    if kind in TERMINAL or kind == "Choice":
        if "Next" in state or "End" in state:
            found.append(f"{where}: a {kind} state has neither Next nor End")
    elif ("Next" in state) == (state.get("End") is True):
        found.append(f"{where}: exactly one of Next and End")
    for target in [state.get("Next"), state.get("Default"), *[c.get("Next") for c in state.get("Choices", [])],
                   *[c.get("Next") for c in state.get("Catch", [])]]:
        if target is not None and target not in states:
            found.append(f"{where}: transition to {target!r}, which is not a state")
    if kind == "Choice" and not state.get("Choices"):
        found.append(f"{where}: a Choice needs Choices")
    _paths(state, where, found)
    _retriers(state.get("Retry", []), where, found)
    if kind == "Task":
        resource = str(state.get("Resource", ""))
        if not resource.startswith("arn:"):
            found.append(f"{where}: Resource must be an ARN")
        if resource == "arn:aws:states:::lambda:invoke" and "FunctionName" not in state.get("Parameters", {}):
            found.append(f"{where}: lambda:invoke needs Parameters.FunctionName")
    if kind == "Map":
        _map(state, where, found)


def _paths(value: Any, where: str, found: list[str]) -> None:
    """Every ``<key>.$`` value is a path (``$`` or ``$$``) or an intrinsic function; every *Path field a path."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("ItemProcessor", "Iterator", "Branches"):
                continue
            if key.endswith(".$") and not (isinstance(item, str) and (item.startswith("$") or "(" in item)):
                found.append(f"{where}/{key}: a .$ field takes a path, got {item!r}")
            if key in ("InputPath", "OutputPath", "ResultPath", "ItemsPath") and item is not None and \
                    not str(item).startswith("$"):
                found.append(f"{where}/{key}: not a path")
            _paths(item, f"{where}/{key}", found)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _paths(item, f"{where}/{index}", found)


def _retriers(retriers: list[dict[str, Any]], where: str, found: list[str]) -> None:
    for index, retrier in enumerate(retriers):
        errors = retrier.get("ErrorEquals") or []
        if not errors:
            found.append(f"{where}/Retry/{index}: ErrorEquals must not be empty")
        if "States.ALL" in errors and (len(errors) > 1 or index != len(retriers) - 1):
            found.append(f"{where}/Retry/{index}: States.ALL must appear alone, in the last retrier")
        if retrier.get("BackoffRate", 2.0) < 1.0 or retrier.get("MaxAttempts", 3) < 0:
            found.append(f"{where}/Retry/{index}: BackoffRate >= 1, MaxAttempts >= 0")
        if retrier.get("JitterStrategy", "NONE") not in ("FULL", "NONE"):
            found.append(f"{where}/Retry/{index}: JitterStrategy is FULL or NONE")


def _map(state: dict[str, Any], where: str, found: list[str]) -> None:
    processor = state.get("ItemProcessor")
    if not isinstance(processor, dict):
        found.append(f"{where}: a Map needs an ItemProcessor (Iterator is the legacy field)")
        return
    config = processor.get("ProcessorConfig", {})
    mode = config.get("Mode", "INLINE")
    if mode not in ("INLINE", "DISTRIBUTED"):
        found.append(f"{where}: ProcessorConfig.Mode is INLINE or DISTRIBUTED")
    if mode == "INLINE":
        for field in (*DISTRIBUTED_ONLY, "ExecutionType"):
            if field in state or field in config:
                found.append(f"{where}: {field} is only for a Map in DISTRIBUTED mode")
    else:
        if config.get("ExecutionType") not in ("STANDARD", "EXPRESS"):
            found.append(f"{where}: a distributed Map's ExecutionType is STANDARD or EXPRESS")
        if "Parameters" in state:
            found.append(f"{where}: a distributed Map takes ItemSelector, not Parameters")
        reader = state.get("ItemReader")
        if reader is not None:
            if reader.get("Resource") not in READER_RESOURCES:
                found.append(f"{where}/ItemReader: Resource is s3:getObject or s3:listObjectsV2")
            input_type = reader.get("ReaderConfig", {}).get("InputType")
            if reader.get("Resource") == "arn:aws:states:::s3:getObject" and input_type not in READER_TYPES:
                found.append(f"{where}/ItemReader: ReaderConfig.InputType is one of {sorted(READER_TYPES)}")
            parameters = reader.get("Parameters", {})
            for field in ("Bucket", "Key"):
                if field not in parameters and f"{field}.$" not in parameters:
                    found.append(f"{where}/ItemReader: Parameters needs {field}")
            if "ItemsPath" in state:
                found.append(f"{where}: ItemsPath cannot be used with an ItemReader")
        batcher = state.get("ItemBatcher")
        if batcher is not None:
            items, size = batcher.get("MaxItemsPerBatch"), batcher.get("MaxInputBytesPerBatch")
            if items is None and size is None and "MaxItemsPerBatchPath" not in batcher:
                found.append(f"{where}/ItemBatcher: needs MaxItemsPerBatch or MaxInputBytesPerBatch")
            if items is not None and not (isinstance(items, int) and items >= 1):
                found.append(f"{where}/ItemBatcher: MaxItemsPerBatch >= 1")
            if size is not None and not (isinstance(size, int) and 1 <= size <= 262_144):
                found.append(f"{where}/ItemBatcher: MaxInputBytesPerBatch is at most 256 KiB")
            if not isinstance(batcher.get("BatchInput", {}), dict):
                found.append(f"{where}/ItemBatcher: BatchInput is an object")
        writer = state.get("ResultWriter")
        if writer is not None:
            if writer.get("Resource") != "arn:aws:states:::s3:putObject":
                found.append(f"{where}/ResultWriter: Resource is arn:aws:states:::s3:putObject")
            parameters = writer.get("Parameters", {})
            for field in ("Bucket", "Prefix"):
                if field not in parameters and f"{field}.$" not in parameters:
                    found.append(f"{where}/ResultWriter: Parameters needs {field}")
        tolerated = state.get("ToleratedFailurePercentage")
        if tolerated is not None and not (isinstance(tolerated, int | float) and 0 <= tolerated <= 100):
            found.append(f"{where}: ToleratedFailurePercentage is 0..100")
        label = state.get("Label")
        if label is not None and (len(label) > 40 or any(c.isspace() or c in LABEL_FORBIDDEN for c in label)):
            found.append(f"{where}: Label is at most 40 characters, no whitespace or special characters")
    concurrency = state.get("MaxConcurrency")
    if concurrency is not None and not (isinstance(concurrency, int) and 0 <= concurrency <= 10_000):
        found.append(f"{where}: MaxConcurrency is an integer 0..10000")
    _machine(processor, f"{where}/ItemProcessor", found)
