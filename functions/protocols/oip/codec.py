"""Open Inference Protocol tensors ↔ numpy, including Triton's binary tensor data extension.

A binary request carries ``Inference-Header-Content-Length: N``: the first N bytes are the JSON
header, the rest holds each input's bytes in order (``parameters.binary_data_size``). BYTES
elements are serialized as a 4-byte little-endian length followed by the bytes.

Whatever the body holds — integers of any size, nesting of any depth, shapes whose product overflows,
values outside their datatype, text that is not valid Unicode — parsing ends in the arrays or in an
:class:`InvalidInputError` (422) that names the problem: never in another exception.
"""

from __future__ import annotations

import json
import math
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
MAX_RANK = 8  # dimensions of one tensor (numpy allows 64; no served model takes more than 4)
MAX_DIMENSION = 2**31 - 1


def parse_infer_request(body: bytes, header_length: str | None) -> tuple[OipInferRequest, dict[str, np.ndarray]]:
    """Decode a JSON or binary-extension request body into the request and its input arrays.

    Raises only :class:`InvalidInputError`: any other exception while decoding is reported as one too.
    """
    try:
        return _parse(body, header_length)
    except InvalidInputError:
        raise
    except Exception as exc:  # a decoder's own limits (recursion, int size, memory): still the caller's input
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise InvalidInputError(f"the inference request could not be read: {detail}") from None


def _parse(body: bytes, header_length: str | None) -> tuple[OipInferRequest, dict[str, np.ndarray]]:
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
    except RecursionError:
        raise InvalidInputError("request body is nested too deeply to read: send flat or shape-nested data") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits (int_max_str_digits)
        raise InvalidInputError(f"request body could not be read: {str(exc).split(';')[0]}") from None
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
    if len(tensor.shape) > MAX_RANK:
        raise InvalidInputError(
            f"input {tensor.name!r}: shape has {len(tensor.shape)} dimensions; at most {MAX_RANK}", param=tensor.name
        )
    if any(d < 0 for d in tensor.shape):
        raise InvalidInputError(f"input {tensor.name!r}: shape {_shape_text(tensor.shape)} has a negative dimension")
    if any(d > MAX_DIMENSION for d in tensor.shape):
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {_shape_text(tensor.shape)} has a dimension over {MAX_DIMENSION}",
            param=tensor.name,
        )
    expected = math.prod(tensor.shape)  # exact: numpy's int64 product wraps ([2**32, 2**32] would be 0)
    if expected != count:
        raise InvalidInputError(
            f"input {tensor.name!r}: shape {_shape_text(tensor.shape)} needs {expected} elements, got {count}",
            param=tensor.name,
        )


def _shape_text(shape: list[int]) -> str:
    text = str(shape)
    return text if len(text) <= 80 else text[:77] + "...]"


def _dtype(tensor: OipRequestInput) -> type[np.generic] | None:
    if tensor.datatype not in DATATYPES:
        raise InvalidInputError(
            f"input {tensor.name!r}: unknown datatype {tensor.datatype[:40]!r}; use one of {', '.join(DATATYPES)}"
        )
    return DATATYPES[tensor.datatype]


def _from_json(tensor: OipRequestInput) -> np.ndarray:
    dtype = _dtype(tensor)
    if tensor.data is None:
        raise InvalidInputError(f"input {tensor.name!r} has neither data nor binary_data_size", param=tensor.name)
    flat = _flatten(tensor, max(1, len(tensor.shape)))
    _check_shape(tensor, len(flat))
    if dtype is None:
        return np.array(_utf8_elements(tensor, flat), dtype=object).reshape(tensor.shape)
    return _numeric(tensor, flat, np.dtype(dtype)).reshape(tensor.shape)


def _flatten(tensor: OipRequestInput, depth: int) -> list[Any]:
    """The elements of flat or shape-nested ``data``, in order; nesting deeper than the shape is refused."""
    flat: list[Any] = []
    stack = [(iter(tensor.data or []), 1)]
    while stack:
        items, level = stack[-1]
        item = next(items, _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if level >= depth:
                raise InvalidInputError(
                    f"input {tensor.name!r}: data is nested deeper than its {len(tensor.shape)}-dimensional shape",
                    param=tensor.name,
                )
            stack.append((iter(item), level + 1))
        else:
            flat.append(item)
    return flat


_END = object()


def _utf8_elements(tensor: OipRequestInput, flat: list[Any]) -> list[bytes]:
    encoded = []
    for index, item in enumerate(flat):
        if not isinstance(item, str):
            raise InvalidInputError(f"input {tensor.name!r}: BYTES data must be strings", param=tensor.name)
        try:
            encoded.append(item.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"input {tensor.name!r} element {index} is not valid Unicode: character {exc.start} is a lone "
                "surrogate; send UTF-8 text (\\u escapes of surrogates must come in valid pairs)",
                param=tensor.name,
            ) from None
    return encoded


def _numeric(tensor: OipRequestInput, flat: list[Any], dtype: np.dtype[Any]) -> np.ndarray:
    """JSON numbers as ``dtype``, exactly: no silent wrap-around, truncation, overflow to inf or str → bool."""
    kinds = {type(x) for x in flat}
    if dtype.kind == "b":
        allowed: tuple[type, ...] = (bool,)
    elif dtype.kind in "iu":
        allowed = (int,)
    else:
        allowed = (int, float)
    if not kinds <= set(allowed):
        found = sorted(k.__name__ for k in kinds - set(allowed))
        raise InvalidInputError(
            f"input {tensor.name!r}: {tensor.datatype} data must be JSON "
            f"{'booleans' if dtype.kind == 'b' else 'integers' if dtype.kind in 'iu' else 'numbers'}, "
            f"got {', '.join(found)}",
            param=tensor.name,
        )
    if not flat or dtype.kind == "b":
        return np.asarray(flat, dtype=dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise InvalidInputError(
                f"input {tensor.name!r}: {bad if abs(bad) < 10**30 else 'a huge integer'} is outside "
                f"{tensor.datatype}'s range "
                f"[{info.min}, {info.max}]",
                param=tensor.name,
            )
        return np.asarray(flat, dtype=dtype)
    try:
        wide = np.asarray(flat, dtype=np.float64)
    except OverflowError:  # an integer beyond float64
        wide = np.full(1, np.inf)
    limit = float(np.finfo(dtype).max)
    if not np.isfinite(wide).all() or np.abs(wide).max() > limit:
        raise InvalidInputError(
            f"input {tensor.name!r}: {tensor.datatype} data must be finite numbers within ±{limit:g}",
            param=tensor.name,
        )
    return wide.astype(dtype)


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
