"""OIP tensor codec: JSON and Triton binary-extension bodies, and their error messages."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from functions.errors import InvalidInputError
from functions.protocols.oip import codec as oip_codec


def binary_body(header: dict, blobs: list[bytes]) -> tuple[bytes, str]:
    raw = json.dumps(header).encode()
    return raw + b"".join(blobs), str(len(raw))


def test_bytes_and_fp32_binary_roundtrip():
    texts = np.array([b"hello", "héllo".encode()], dtype=object)
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    b1, b2 = oip_codec.to_binary(texts), oip_codec.to_binary(floats)
    body, length = binary_body(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(b1)}},
                {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": len(b2)}},
            ]
        },
        [b1, b2],
    )
    _, arrays = oip_codec.parse_infer_request(body, length)
    assert list(arrays["text"]) == list(texts)
    assert np.array_equal(arrays["x"], floats)


def test_bytes_element_overrun_is_refused():
    blob = struct.pack("<I", 100) + b"short"
    body, length = binary_body(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(blob)}}
            ]
        },
        [blob],
    )
    with pytest.raises(InvalidInputError, match="overruns"):
        oip_codec.parse_infer_request(body, length)


@pytest.mark.parametrize("length", ["abc", "0", "999999"])
def test_bad_header_length(length):
    with pytest.raises(InvalidInputError, match="Inference-Header-Content-Length"):
        oip_codec.parse_infer_request(b'{"inputs": []}', length)


def test_trailing_bytes_are_refused():
    body, length = binary_body({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, [b"junk"])
    with pytest.raises(InvalidInputError, match="trailing"):
        oip_codec.parse_infer_request(body, length)


def test_nested_json_data_is_flattened_to_shape():
    _, arrays = oip_codec.parse_infer_request(
        json.dumps(
            {"inputs": [{"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}]}
        ).encode(),
        None,
    )
    assert arrays["x"].tolist() == [[1, 2], [3, 4]] and arrays["x"].dtype == np.int64


def test_empty_inputs_list_names_the_field():
    with pytest.raises(InvalidInputError, match="inputs"):
        oip_codec.parse_infer_request(b'{"inputs": []}', None)
