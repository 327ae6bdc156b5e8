"""Open Inference Protocol tensors ↔ numpy, including Triton's binary tensor data extension.

A binary request carries ``Inference-Header-Content-Length: N``: the first N bytes are the JSON
header, the rest holds each input's bytes in order (``parameters.binary_data_size``). BYTES
elements are serialized as a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
from pydantic import ValidationError

from functions.errors import InvalidInputError
from functions.protocols.oip.schemas import OipInferRequest, OipRequestInput

HEADER_LENGTH = "inference-header-content-length"

DATATYPES: dict[str, type[np.generic] | None] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": None,
}
_NUMPY_TO_OIP = {np.dtype(v): k for k, v in DATATYPES.items() if v is not None}


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[OipInferRequest, dict[str, np.ndarray]]:
    """Decode a JSON or binary-extension request body into the request and its input arrays."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise InvalidInputError("Inference-Header-Content-Length must be an integer") from None
        if not 0 < split <= len(body):
            raise InvalidInputError(f"Inference-Header-Content-Length {split} is outside the {len(body)}-byte body")
        header, binary = body[:split], body[split:]
    else:
        header, binary = body, b""
    try:
        raw = json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None
    try:
        request = OipInferRequest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"{where}: {first['msg']}", param=where, details=exc.errors()) from None
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise InvalidInputError(f"input {tensor.name!r}: binary_data_size {size} exceeds the binary payload")
            arrays[tensor.name] = _from_binary(tensor, binary[offset : offset + size])
            offset += size
        else:
            arrays[tensor.name] = _from_json(tensor)
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} trailing bytes after the declared binary inputs")
    return request, arrays


def _check_shape(tensor: OipRequestInput, count: int) -> None:
    if any(d < 0 for d in tensor.shape):
        raise InvalidInputError(f"input {tensor.name!r}: shape {tensor.shape} has a negative dimension")
    expected = int(np.prod(tensor.shape)) if tensor.shape else 1
    if expected != count:
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {tensor.shape} needs {expected} elements, got {count}", param=tensor.name
        )


def _dtype(tensor: OipRequestInput) -> type[np.generic] | None:
    if tensor.datatype not in DATATYPES:
        raise InvalidInputError(
            f"input {tensor.name!r}: unknown datatype {tensor.datatype!r}; use one of {', '.join(DATATYPES)}"
        )
    return DATATYPES[tensor.datatype]


def _from_json(tensor: OipRequestInput) -> np.ndarray:
    dtype = _dtype(tensor)
    if tensor.data is None:
        raise InvalidInputError(f"input {tensor.name!r} has neither data nor binary_data_size", param=tensor.name)
    flat = list(_flatten(tensor.data))
    _check_shape(tensor, len(flat))
    if dtype is None:
        if not all(isinstance(x, str) for x in flat):
            raise InvalidInputError(f"input {tensor.name!r}: BYTES data must be strings", param=tensor.name)
        return np.array([x.encode("utf-8") for x in flat], dtype=object).reshape(tensor.shape)
    try:
        return np.asarray(flat, dtype=dtype).reshape(tensor.shape)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"input {tensor.name!r}: data is not {tensor.datatype}: {exc}") from None


def _flatten(data: list[Any]) -> Any:
    for item in data:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _from_binary(tensor: OipRequestInput, payload: bytes) -> np.ndarray:
    dtype = _dtype(tensor)
    if dtype is not None:
        itemsize = np.dtype(dtype).itemsize
        if len(payload) % itemsize:
            raise InvalidInputError(
                f"input {tensor.name!r}: {len(payload)} bytes is not a whole number of {tensor.datatype}"
            )
        array = np.frombuffer(payload, dtype=np.dtype(dtype).newbyteorder("<"))
        _check_shape(tensor, array.size)
        return array.reshape(tensor.shape)
    items: list[bytes] = []
    offset = 0
    while offset < len(payload):
        if offset + 4 > len(payload):
            raise InvalidInputError(f"input {tensor.name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", payload, offset)
        offset += 4
        if offset + length > len(payload):
            raise InvalidInputError(f"input {tensor.name!r}: BYTES element overruns the payload")
        items.append(payload[offset : offset + length])
        offset += length
    _check_shape(tensor, len(items))
    return np.array(items, dtype=object).reshape(tensor.shape)


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object:
        return "BYTES"
    return _NUMPY_TO_OIP[array.dtype]


def to_json_data(array: np.ndarray) -> list[Any]:
    if array.dtype == object:
        return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in array.reshape(-1)]
    return list(array.reshape(-1).tolist())


def to_binary(array: np.ndarray) -> bytes:
    if array.dtype == object:
        parts = []
        for item in array.reshape(-1):
            raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(raw)) + raw)
        return b"".join(parts)
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
