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


def _json_tensor(data: str, shape: str = "[1]", datatype: str = "INT64") -> bytes:
    return f'{{"inputs": [{{"name": "x", "shape": {shape}, "datatype": "{datatype}", "data": {data}}}]}}'.encode()


@pytest.mark.parametrize(
    ("data", "shape", "datatype", "message"),
    [
        ("[]", "[4294967296, 4294967296]", "BYTES", "dimension over"),  # int64 product wraps to 0
        ("[]", "[65536, 65536, 65536, 65536]", "FP32", "needs 18446744073709551616 elements"),
        ("[1]", "[" + ", ".join(["1"] * 100) + "]", "INT64", "at most 8"),
        ("[" + "9" * 5000 + "]", "[1]", "INT64", "4300 digits"),
        (f"[{2**63}]", "[1]", "INT64", "outside INT64's range"),
        ("[300]", "[1]", "UINT8", "outside UINT8's range"),
        ("[-1]", "[1]", "UINT8", "outside UINT8's range"),
        ("[1.5]", "[1]", "INT32", "must be JSON integers"),
        ("[true]", "[1]", "INT64", "must be JSON integers"),
        ('["1"]', "[1]", "FP32", "must be JSON numbers"),
        ("[null]", "[1]", "FP32", "must be JSON numbers"),
        ("[1e10]", "[1]", "FP16", "finite numbers within"),
        ("[NaN]", "[1]", "FP32", "finite numbers"),
        ("[1e400]", "[1]", "FP64", "finite numbers"),
        (f"[{10**400}]", "[1]", "FP64", "finite numbers"),
        ('["yes"]', "[1]", "BOOL", "must be JSON booleans"),
        ("[1]", "[1]", "BOOL", "must be JSON booleans"),
        ('["\\ud800"]', "[1]", "BYTES", "lone surrogate"),
        ("[" * 3000 + "1" + "]" * 3000, "[1]", "INT64", "nested too deeply"),
        ("[" * 500 + "1" + "]" * 500, "[1]", "INT64", "nested deeper than its 1-dimensional shape"),
        ("[[[1]]]", "[1, 1]", "INT64", "nested deeper"),
    ],
)
def test_values_a_tensor_cannot_hold_are_refused_with_what_to_fix(data, shape, datatype, message):
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("(", r"\(")) as error:
        oip_codec.parse_infer_request(_json_tensor(data, shape, datatype), None)
    assert error.value.status_code == 422


def test_values_at_the_edges_of_their_datatype_are_kept_exactly():
    body = _json_tensor(f"[{-(2**63)}, {2**63 - 1}]", "[2]")
    assert oip_codec.parse_infer_request(body, None)[1]["x"].tolist() == [-(2**63), 2**63 - 1]
    assert oip_codec.parse_infer_request(_json_tensor("[0, 255]", "[2]", "UINT8"), None)[1]["x"].tolist() == [0, 255]
    assert oip_codec.parse_infer_request(_json_tensor("[65504.0, 1]", "[2]", "FP16"), None)[1]["x"].dtype == np.float16
    _, arrays = oip_codec.parse_infer_request(_json_tensor("[]", "[0, 2147483647]", "FP32"), None)
    assert arrays["x"].shape == (0, 2147483647)
