from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from pinnace.errors import InvalidInputError, PayloadTooLargeError
from pinnace.protocol.json_codec import decode_request, encode_response
from pinnace.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor

LIMIT = 1 << 20


def body(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("UINT8", [1, 255], np.uint8),
        ("UINT16", [1, 65535], np.uint16),
        ("UINT32", [1, 2], np.uint32),
        ("UINT64", [1, 2], np.uint64),
        ("INT8", [-1, 127], np.int8),
        ("INT16", [-1, 2], np.int16),
        ("INT32", [-1, 2], np.int32),
        ("INT64", [-1, 2**40], np.int64),
        ("FP16", [0.5, 1.5], np.float16),
        ("FP32", [0.5, 1.5], np.float32),
        ("FP64", [0.5, 1.5], np.float64),
    ],
)
def test_json_numeric_datatypes(datatype: str, data: list[object], dtype: type) -> None:
    req = decode_request(body([{"name": "x", "shape": [2], "datatype": datatype, "data": data}]), None, max_elements=LIMIT)
    array = req.inputs[0].data
    assert array.dtype == np.dtype(dtype)
    assert array.tolist() == data


def test_json_nested_data_and_bytes() -> None:
    req = decode_request(
        body(
            [
                {"name": "m", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]},
                {"name": "s", "shape": [2], "datatype": "BYTES", "data": ["héllo", "x"]},
            ],
            id="r1",
            parameters={"timeout": 5},
            outputs=[{"name": "y", "parameters": {"binary_data": True}}],
        ),
        None,
        max_elements=LIMIT,
    )
    assert req.id == "r1"
    assert req.parameters == {"timeout": 5}
    assert req.inputs[0].data.shape == (2, 2)
    assert req.inputs[1].data.tolist() == ["héllo".encode(), b"x"]
    assert req.outputs == [RequestedOutput(name="y", parameters={"binary_data": True})]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"inputs": [], "id": "\xffx"}', "a string is not UTF-8 (invalid start byte)"),
        (b'{"inputs": 3}', "invalid inference request"),
        (body([{"name": "x", "shape": [2], "datatype": "FLOAT", "data": [1, 2]}]), "unknown datatype 'FLOAT'"),
        (body([{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]), "2 data elements, but shape [3] needs 3"),
        (body([{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]), "invalid dimension -1"),
        (body([{"name": "x", "shape": [1] * 17, "datatype": "FP32", "data": [1]}]), "17 dimensions; at most 16"),
        (body([{"name": "x", "shape": [True], "datatype": "FP32", "data": [1]}]), "Expected `int`, got `bool`"),
        (body([{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]), "does not fit datatype FP32"),
        (body([{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 1000]}]), "does not fit datatype INT8"),
        (body([{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}]), "x"),
        (body([{"name": "x", "shape": [1], "datatype": "FP32"}]), "has no data"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ' + b"[" * 5000 + b"]" * 5000 + b"}]}", "nested too deeply"),
    ],
)
def test_bad_json_bodies_name_the_problem(payload: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        decode_request(payload, None, max_elements=LIMIT)
    assert message in info.value.message


def test_huge_dims_refused_before_allocation() -> None:
    huge = body([{"name": "x", "shape": [2**31, 2**31], "datatype": "FP32", "data": [1]}])
    with pytest.raises(PayloadTooLargeError, match="limit"):
        decode_request(huge, None, max_elements=LIMIT)


def test_binary_inputs_are_zero_copy_views() -> None:
    raw = np.arange(6, dtype=np.float32).tobytes()
    strings = b"".join(struct.pack("<I", len(s)) + s for s in (b"ab", b""))
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": len(raw)}},
                {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}},
            ]
        }
    ).encode()
    req = decode_request(header + raw + strings, len(header), max_elements=LIMIT)
    x = req.inputs[0].data
    assert x.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert not x.flags.owndata  # a view over the request body
    assert req.inputs[1].data.tolist() == [b"ab", b""]


@pytest.mark.parametrize(
    ("size", "extra", "header_len_delta", "message"),
    [
        (20, b"", 0, "needs 24"),
        (100, b"", 0, "only"),
        (16, b"", 0, "needs 24"),
        (24, b"xx", 0, "belong to no input"),
        (24, b"", 10_000, "exceeds the body"),
    ],
)
def test_bad_binary_bodies(size: int, extra: bytes, header_len_delta: int, message: str) -> None:
    raw = np.zeros(6, dtype=np.float32).tobytes()[:size]
    header = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    ).encode()
    with pytest.raises(InvalidInputError, match=message):
        decode_request(header + raw + extra, len(header) + header_len_delta, max_elements=LIMIT)


def test_encode_json_and_binary_outputs() -> None:
    response = InferResponse(
        model_name="m",
        model_version="1",
        id="r",
        outputs=[
            Tensor("a", "FP32", np.array([[1.5, 2.5]], dtype=np.float32)),
            Tensor("b", "BYTES", np.array([b"hi"], dtype=object)),
        ],
    )
    plain, length = encode_response(response, InferRequest(inputs=[]))
    assert length is None
    doc = json.loads(plain)
    assert doc["outputs"][0] == {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.5]}
    assert doc["outputs"][1]["data"] == ["hi"]
    assert doc["id"] == "r" and doc["model_version"] == "1"

    wants_binary = InferRequest(inputs=[], outputs=[RequestedOutput("a", {"binary_data": True}), RequestedOutput("b")])
    payload, length = encode_response(response, wants_binary)
    assert length is not None
    doc = json.loads(payload[:length])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert "data" not in doc["outputs"][0]
    assert np.frombuffer(payload[length:], dtype=np.float32).tolist() == [1.5, 2.5]

    all_binary = InferRequest(inputs=[], parameters={"binary_data_output": True})
    payload, length = encode_response(response, all_binary)
    assert length is not None
    assert payload[length + 8 :] == struct.pack("<I", 2) + b"hi"
