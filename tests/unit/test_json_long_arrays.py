"""Long JSON arrays: decoded by simdjson into one buffer, encoded by orjson from the array.

Whatever path a tensor takes, what is accepted, its values and what is refused must be the
same as for a short array; these tests hold the long path to the short one.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import msgspec
import numpy as np
import pytest

from pinnace.errors import InvalidInputError, PayloadTooLargeError
from pinnace.protocol import json_codec, json_long, json_numbers
from pinnace.protocol.json_codec import decode_request, encode_response
from pinnace.protocol.json_numbers import LONG_DATA_BYTES
from pinnace.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor

LIMIT = 1 << 20
ROWS, COLUMNS = 2, 300
DTYPES = {
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


def _body(data: Any, datatype: str, shape: list[int], **extra: Any) -> bytes:
    tensor = {"name": "x", "shape": shape, "datatype": datatype, "data": data, **extra}
    return json.dumps({"inputs": [tensor]}).encode()


def _decode(body: bytes) -> np.ndarray:
    return decode_request(body, None, max_elements=LIMIT).inputs[0].data


def _values(datatype: str) -> list[Any]:
    """Long enough for the simdjson path, with each type's extremes."""
    rng = np.random.default_rng(7)
    dtype = np.dtype(DTYPES[datatype])
    if dtype.kind == "f":
        info = np.finfo(dtype)
        edges = [float(info.min), float(info.max), float(info.tiny), -0.0, 0.0, 1e-3]
        middle = rng.uniform(-1000, 1000, ROWS * COLUMNS - len(edges)).astype(dtype).tolist()
    else:
        limits = np.iinfo(dtype)
        edges = [int(limits.min), int(limits.max), 0, 1]
        middle = rng.integers(limits.min, limits.max, ROWS * COLUMNS - len(edges),
                              dtype=dtype, endpoint=True).tolist()
    return edges + middle


@pytest.fixture
def simdjson_arrays(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray | None]:
    """What each array simdjson parsed became (None: it left the array to the usual path),
    whether its text was lifted out of the body or found by the two steps."""
    seen: list[np.ndarray | None] = []
    parsed: list[object] = []
    real_parse, real_numbers = json_numbers._parse, json_numbers.numbers

    def parse(text: bytes | memoryview, own: bool) -> Any:
        parsed.append(text)
        return real_parse(text, own)

    def numbers(text: bytes | memoryview, dtype: np.dtype, *, flat: bool = False) -> np.ndarray | None:
        asked = len(parsed)
        result = real_numbers(text, dtype, flat=flat)
        if len(parsed) > asked:  # simdjson parsed it
            seen.append(result)
        return result

    monkeypatch.setattr(json_numbers, "_parse", parse)
    monkeypatch.setattr(json_long, "numbers", numbers)
    return seen


@pytest.mark.parametrize("datatype", sorted(DTYPES))
def test_long_flat_arrays_decode_exactly_as_short_ones_do(
    datatype: str, simdjson_arrays: list[np.ndarray | None]
) -> None:
    values = _values(datatype)
    body = _body(values, datatype, [ROWS, COLUMNS])
    assert len(json.dumps(values)) >= LONG_DATA_BYTES
    array = _decode(body)
    assert len(simdjson_arrays) == 1 and simdjson_arrays[0] is not None  # the fast path ran
    expected = np.array(values, dtype=DTYPES[datatype]).reshape(ROWS, COLUMNS)
    assert array.dtype == expected.dtype
    assert array.shape == (ROWS, COLUMNS)
    assert array.tobytes() == expected.tobytes()  # bit for bit, -0.0 included
    array[0, 0] = 1  # writable, as arrays decoded from short JSON are


@pytest.mark.parametrize("datatype", ["FP32", "INT64"])
def test_long_nested_arrays_take_the_usual_path_and_ragged_ones_are_refused(
    datatype: str, simdjson_arrays: list[np.ndarray | None]
) -> None:
    values = _values(datatype)
    nested = [values[:COLUMNS], values[COLUMNS:]]
    expected = np.array(values, dtype=DTYPES[datatype]).reshape(ROWS, COLUMNS)
    assert _decode(_body(nested, datatype, [ROWS, COLUMNS])).tobytes() == expected.tobytes()
    assert simdjson_arrays == []  # simdjson would flatten it: never asked
    ragged = [values[: COLUMNS + 1], values[COLUMNS + 1 :]]  # the right count, the wrong rows
    with pytest.raises(InvalidInputError, match="does not fit datatype"):
        _decode(_body(ragged, datatype, [ROWS, COLUMNS]))


@pytest.mark.parametrize(
    ("datatype", "bad", "message"),
    [
        ("INT8", 128, "does not fit datatype INT8"),
        ("UINT8", -1, "does not fit datatype UINT8"),
        ("UINT32", 2**32, "does not fit datatype UINT32"),
        ("INT64", 2**63, "does not fit datatype INT64"),
        ("UINT64", 2**64, "does not fit datatype UINT64"),
        ("FP32", "1.5", None),  # numpy reads numeric strings: the same answer either way
        ("FP32", None, None),  # null reads as NaN (refused later, by models that refuse NaN)
        ("FP64", True, None),
    ],
)
def test_what_the_long_path_cannot_take_is_decided_as_for_short_arrays(
    datatype: str, bad: Any, message: str | None
) -> None:
    values = [1] * 400
    values[250] = bad
    long_body = _body(values, datatype, [400])
    short_body = _body(values[245:255], datatype, [10])
    if message is None:
        np.testing.assert_array_equal(_decode(long_body)[250], _decode(short_body)[5])
        return
    for body in (long_body, short_body):
        with pytest.raises(InvalidInputError, match=message):
            _decode(body)


def test_floats_for_an_integer_type_behave_as_for_short_arrays() -> None:
    values = [1.75] * 400
    assert _decode(_body(values, "INT32", [400])).tolist() == [1] * 400
    assert _decode(_body(values[:3], "INT32", [3])).tolist() == [1] * 3


def test_long_arrays_keep_the_count_and_shape_checks() -> None:
    values = [0.5] * 399
    with pytest.raises(InvalidInputError, match="399 data elements, but shape \\[400\\] needs 400"):
        _decode(_body(values, "FP32", [400]))
    with pytest.raises(PayloadTooLargeError, match="the limit is 100"):
        decode_request(_body(values, "FP32", [399]), None, max_elements=100)
    with pytest.raises(InvalidInputError, match="both binary data and JSON data"):
        _decode(_body(values, "FP32", [399], parameters={"binary_data_size": 4}))


def test_a_long_body_with_absent_null_or_odd_data_is_refused_as_a_short_one_is() -> None:
    padding = {"id": "p" * LONG_DATA_BYTES}
    cases = [
        ({"name": "x", "shape": [1], "datatype": "FP32"}, "has no data"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": None}, "has no data"),
        ({"name": "x", "shape": [1], "datatype": "FP32", "data": "text"}, "invalid inference request"),
    ]
    for tensor, message in cases:
        body = json.dumps({"inputs": [tensor], **padding}).encode()
        with pytest.raises(InvalidInputError, match=message):
            _decode(body)
    short = json.dumps({"inputs": [{"name": "b", "shape": [2], "datatype": "BYTES",
                                    "data": ["a", "b"]}], **padding}).encode()
    assert _decode(short).tolist() == [b"a", b"b"]


def test_threads_each_parse_with_their_own_parser() -> None:
    """A simdjson parser serves one document at a time: each thread has its own."""
    values = _values("FP32")
    body = _body(values, "FP32", [ROWS, COLUMNS])
    expected = np.array(values, dtype=np.float32).reshape(ROWS, COLUMNS)
    assert _decode(body).tobytes() == expected.tobytes()
    parsers: list[object] = [json_numbers._parsers.parser]  # kept alive: ids stay distinct
    failures: list[BaseException] = []

    def decode_many() -> None:
        try:
            for _ in range(50):
                assert _decode(body).tobytes() == expected.tobytes()
            parsers.append(json_numbers._parsers.parser)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=decode_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len({id(p) for p in parsers}) == 5  # this thread's and one per thread


def _encoded(datatype: str, array: np.ndarray) -> dict[str, Any]:
    response = InferResponse("m", [Tensor("y", datatype, array)], model_version="1")
    payload, json_length = encode_response(response, InferRequest([], outputs=[RequestedOutput("y")]))
    assert json_length is None
    output: dict[str, Any] = msgspec.json.decode(payload)["outputs"][0]
    return output


@pytest.mark.parametrize("datatype", sorted(DTYPES))
def test_long_outputs_come_back_exactly(datatype: str) -> None:
    expected = np.array(_values(datatype), dtype=DTYPES[datatype]).reshape(ROWS, COLUMNS)
    output = _encoded(datatype, expected)
    assert output["shape"] == [ROWS, COLUMNS]
    back = np.array(output["data"], dtype=DTYPES[datatype]).reshape(ROWS, COLUMNS)
    assert back.tobytes() == expected.tobytes()


def test_long_outputs_are_row_major_whatever_the_memory_order() -> None:
    array = np.arange(40, dtype=np.int32).reshape(5, 8).T  # not C-contiguous
    assert _encoded("INT32", array)["data"] == array.ravel().tolist()
    assert _encoded("BOOL", np.arange(20) % 3 == 0)["data"] == (np.arange(20) % 3 == 0).tolist()


def test_fp32_outputs_are_written_in_their_shortest_exact_form() -> None:
    data = _encoded("FP32", np.full(20, 0.1, dtype=np.float32))["data"]
    assert data == [0.1] * 20  # not 0.10000000149011612
    nan = _encoded("FP32", np.array([np.nan] * 20, dtype=np.float32))["data"]
    assert nan == [None] * 20  # as short outputs write NaN


def test_arrays_too_long_to_keep_a_parser_for_get_one_of_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A parser holds on to the buffers of the largest document it saw: over 8 MiB of text,
    the array is parsed by a parser that goes with it."""

    class NoKeptParser:
        @property
        def parser(self) -> object:
            raise AssertionError("the kept parser was asked for")

    monkeypatch.setattr(json_numbers, "_parsers", NoKeptParser())
    text = b"[" + b"1.25," * 2_200_000 + b"1.25]"
    assert len(text) > 8 << 20
    array = json_numbers.numbers(text, np.dtype(np.float32))
    assert array is not None and array.size == 2_200_001 and bool((array == 1.25).all())
    with pytest.raises(AssertionError, match="kept parser"):
        json_numbers.numbers(text[:2000] + b"1]", np.dtype(np.float32))


def _outcome(body: bytes) -> tuple[str, Any]:
    try:
        request = decode_request(body, None, max_elements=LIMIT)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    inputs = [(t.name, t.parameters, t.data.dtype.str, t.data.shape,
               t.data.tolist() if t.data.dtype == object else t.data.tobytes())
              for t in request.inputs]
    outputs = [(o.name, o.parameters) for o in request.outputs or ()]
    return "ok", (request.id, request.parameters, inputs, outputs)


def _tensor(data: str, *, shape: str = "[600]", datatype: str = "FP32", name: str = "x") -> str:
    return (f'{{"name":"{name}","shape":{shape},"datatype":"{datatype}","data":' + data + "}")


_LONG_ONES = "[" + ",".join(["1"] * 600) + "]"
_CASES = {
    "flat floats": _tensor(_LONG_ONES),
    "nested after the first": _tensor("[1," + ",".join(["[2,3]"] * 300) + "]", shape="[601]"),
    "ragged behind spaces": _tensor("[" + " " * 100 + "[1,2]," + ",".join(["[3]"] * 599) + "]",
                                    shape="[601]"),
    "a string inside": _tensor(_LONG_ONES.replace("1,", '"a",', 1)),
    "out of float range": _tensor(_LONG_ONES.replace("1,", "1e400,", 1), datatype="FP64"),
    "a huge integer": _tensor(_LONG_ONES.replace("1,", "9" * 30 + ",", 1), datatype="INT64"),
    "data is a string": _tensor('"' + "x" * 1100 + '"', shape="[1]"),
    "data is a number": _tensor("5", shape="[1]"),
    "the second input's data is wrong, the first's binary size": (
        '{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":"x"}},'
        + _tensor("5", shape="[1]", name="b")
    ),
    "wrong count": _tensor(_LONG_ONES, shape="[601]"),
    "bad shape": _tensor(_LONG_ONES, shape="[-1]"),
    "unknown datatype": _tensor(_LONG_ONES, datatype="FP8"),
}


_PAD = '"id":"' + "p" * LONG_DATA_BYTES + '"'
"""Makes any body long enough for the long-body decoders."""
_BODIES = {
    **{name: "{" + _PAD + ',"inputs":[' + inputs + "]}" for name, inputs in _CASES.items()},
    "parameters and outputs": (
        '{"parameters":{"binary_data_output":false,"k":{"n":1,"s":"t"}},' + _PAD
        + ',"inputs":[' + _tensor(_LONG_ONES)[:-1] + ',"parameters":{"p":"v"}}],'
        '"outputs":[{"name":"y","parameters":{"binary_data":false}},{"name":"z"}]}'
    ),
    "two inputs, one short": (
        "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + ","
        + _tensor("[1,2]", shape="[2]", datatype="INT64", name="b") + "]}"
    ),
    "two long inputs": (
        '{"inputs":[' + _tensor(_LONG_ONES) + "," + _tensor(_LONG_ONES, datatype="INT16", name="b") + "]}"
    ),
    "BYTES and BOOL data": (
        "{" + _PAD + ',"inputs":[' + _tensor('["a","b"]', shape="[2]", datatype="BYTES") + ","
        + _tensor("[true,false]", shape="[2]", datatype="BOOL", name="b") + "]}"
    ),
    "null and absent data": (
        "{" + _PAD + ',"inputs":[' + _tensor("null") + ","
        + '{"name":"b","shape":[1],"datatype":"FP32"}]}'
    ),
    "unknown keys": '{"extra":{"x":1},' + _PAD + ',"inputs":[' + _tensor(_LONG_ONES)[:-1] + ',"more":1}]}',
    "a key given twice": '{"id":"first",' + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "an input's key given twice": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES)[:-1] + ',"name":"y"}]}',
    "an input's data given twice": '{"inputs":[' + _tensor(_LONG_ONES)[:-1] + ',"data":[2,2]}]}',
    "inputs given twice": '{"inputs":[' + _tensor(_LONG_ONES) + '],"inputs":[' + _tensor("[3]", shape="[1]") + "]}",
    "a parameter given twice": '{"parameters":{"a":1,"a":2},' + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "a bracket in a string": '{"id":"[","inputs":[' + _tensor(_LONG_ONES) + "]}",
    "brackets in a BYTES element": (
        '{"inputs":[' + _tensor('["a]b","[c"]', shape="[2]", datatype="BYTES") + ","
        + _tensor(_LONG_ONES, name="b") + "]}"
    ),
    "objects as BYTES data": (
        '{"inputs":[' + _tensor('[{"a":1},{"data":[2]}]', shape="[2]", datatype="BYTES") + ","
        + _tensor(_LONG_ONES, name="b") + "]}"
    ),
    "an array among the parameters": '{"parameters":{"l":[1,2]},' + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "a data array among the parameters": '{"parameters":{"data":[1,2]},"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "a data array among an input's parameters": (
        '{"inputs":[' + _tensor(_LONG_ONES)[:-1] + ',"parameters":{"data":[1,2]}}]}'
    ),
    "a data array at the top": '{"data":[1,2],"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "a data array in an output": '{"inputs":[' + _tensor(_LONG_ONES) + '],"outputs":[{"name":"y","data":[1]}]}',
    "a key that ends in data": (
        '{"inputs":[' + _tensor(_LONG_ONES)[:-1] + ',"x\\"data":[1,2],"no data":[3]}]}'
    ),
    "the marker as an id": '{"id":"\\u0000","inputs":[' + _tensor(_LONG_ONES) + "]}",
    "the marker as BYTES data": (
        '{"inputs":[' + _tensor('"\\u0000"', shape="[1]", datatype="BYTES") + ","
        + _tensor(_LONG_ONES, name="b") + "]}"
    ),
    "the marker inside BYTES data": (
        '{"inputs":[' + _tensor('["\\u0000"]', shape="[1]", datatype="BYTES") + ","
        + _tensor(_LONG_ONES, name="b") + "]}"
    ),
    "the marker as data, a data array among the parameters": (
        '{"parameters":{"data":[1,2]},' + _PAD + ',"inputs":['
        + _tensor('"\\u0000"', shape="[1]", datatype="BYTES") + "]}"
    ),
    "spaces around the colon": '{"inputs":[' + _tensor(_LONG_ONES).replace('"data":', '"data" : ') + "]}",
    "a data array never closed": '{"inputs":[' + _tensor(_LONG_ONES)[:-2],
    "a malformed lifted array": '{"inputs":[' + _tensor(_LONG_ONES.replace("1,", "1,,", 1)) + "]}",
    "a malformed number in a lifted array": '{"inputs":[' + _tensor(_LONG_ONES.replace("1,", "01,", 1)) + "]}",
    "malformed after a lifted array": '{"inputs":[' + _tensor(_LONG_ONES) + "],}",
    "an id that is a number": '{"id":' + "1" * 300 + ',"parameters":{"p":"pad"},"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "a float in the shape": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES, shape="[600.0]") + "]}",
    "a bool in the shape": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES, shape="[true]") + "]}",
    "a nested shape": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES, shape="[[600]]") + "]}",
    "outputs that are not a list": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + '],"outputs":{"name":"y"}}',
    "an output without a name": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + '],"outputs":[{"parameters":{}}]}',
    "no inputs": '{"id":"' + "p" * LONG_DATA_BYTES + '"}',
    "inputs that are not a list": "{" + _PAD + ',"inputs":' + _tensor(_LONG_ONES) + "}",
    "a parameter past 64 bits": '{"parameters":{"n":' + "9" * 30 + "}," + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "a lone surrogate": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES, name="\\ud800") + "]}",
    "the body is an array": "[" + ",".join(["1"] * LONG_DATA_BYTES) + "]",
    "a byte-order mark first": "\ufeff{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]}",
    "objects nested 1,000 deep in the parameters": (
        '{"parameters":' + '{"a":' * 1000 + "1" + "}" * 1000 + "," + _PAD + ',"inputs":['
        + _tensor(_LONG_ONES) + "]}"
    ),
    "100 objects in the parameters": (
        '{"parameters":{' + ",".join(f'"k{i}":{{"n":{i}}}' for i in range(100)) + "}," + _PAD
        + ',"inputs":[' + _tensor(_LONG_ONES) + "]}"
    ),
    "malformed": "{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]",
}


def _without_lifting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_long, "_lifted", lambda body: None)


@pytest.mark.parametrize("body", list(_BODIES.values()), ids=list(_BODIES))
def test_lifted_two_step_and_one_go_decoding_agree_on_everything(
    body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded = body.encode()
    assert len(encoded) >= LONG_DATA_BYTES
    lifted = _outcome(encoded)
    _without_lifting(monkeypatch)  # msgspec, then simdjson
    two_step = _outcome(encoded)
    monkeypatch.setattr(json_codec, "LONG_DATA_BYTES", len(encoded) + 1)  # msgspec alone
    assert lifted == two_step == _outcome(encoded)


def _record_long_decoder(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every text msgspec's long-body decoder is given, from now on."""
    real = json_long._long_decoder
    given: list[bytes] = []

    class Recording:
        def decode(self, body: bytes) -> Any:
            given.append(bytes(body))
            return real.decode(body)

    monkeypatch.setattr(json_long, "_long_decoder", Recording())
    return given


def test_msgspec_never_reads_the_numbers_of_lifted_arrays(
    monkeypatch: pytest.MonkeyPatch, simdjson_arrays: list[np.ndarray | None]
) -> None:
    given = _record_long_decoder(monkeypatch)
    body = _BODIES["two long inputs"].encode()
    request = decode_request(body, None, max_elements=LIMIT)
    assert [t.data.tolist() for t in request.inputs] == [[1.0] * 600, [1] * 600]
    assert len(given) == 1 and b"1,1" not in given[0] and len(given[0]) < 200
    assert len(simdjson_arrays) == 2 and all(a is not None for a in simdjson_arrays)
    given.clear()
    request = decode_request(_BODIES["parameters and outputs"].encode(), None, max_elements=LIMIT)
    assert request.parameters == {"binary_data_output": False, "k": {"n": 1, "s": "t"}}
    assert request.outputs is not None and [o.name for o in request.outputs] == ["y", "z"]
    assert len(given) == 1 and b"1,1" not in given[0]
    # A nested array stays in the body (cut at its first "]", it would be malformed); the
    # others are still lifted.
    given.clear()
    nested = _tensor("[" + ",".join(["[2,3]"] * 300) + "]", shape="[300,2]")
    body = ('{"inputs":[' + nested + "," + _tensor(_LONG_ONES, name="b") + "]}").encode()
    assert decode_request(body, None, max_elements=LIMIT).inputs[1].data.size == 600
    assert len(given) == 1 and b"[2,3]" in given[0] and b"1,1" not in given[0]
    # A data array that is not an input's: the whole body goes the two-step way.
    given.clear()
    body = _BODIES["a data array among the parameters"].encode()
    assert decode_request(body, None, max_elements=LIMIT).parameters == {"data": [1, 2]}
    assert given[-1] == body


def test_a_string_that_is_not_utf8_is_refused_on_every_path(monkeypatch: pytest.MonkeyPatch) -> None:
    body = ("{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES, name="NAME") + "]}").encode()
    body = body.replace(b"NAME", b"\xff")
    messages = [_outcome(body)]
    _without_lifting(monkeypatch)
    messages.append(_outcome(body))
    monkeypatch.setattr(json_codec, "LONG_DATA_BYTES", len(body) + 1)
    messages.append(_outcome(body))
    assert messages == [("InvalidInputError", "malformed JSON: a string is not UTF-8 (invalid start byte)")] * 3


def test_a_lifted_body_leaves_the_parser_free_or_replaces_a_dense_ones() -> None:
    kept = json_numbers._parsers.parser
    body = ("{" + _PAD + ',"inputs":[' + _tensor(_LONG_ONES) + "]}").encode()
    for _ in range(3):  # nothing of a document outlives its request
        assert decode_request(body, None, max_elements=LIMIT).inputs[0].data.size == 600
    assert json_numbers._parsers.parser is kept
    dense = ('{"inputs":[' + _tensor("[" + "1," * 400_000 + "1]", shape="[400001]", datatype="INT64") + "]}")
    assert decode_request(dense.encode(), None, max_elements=LIMIT).inputs[0].data.size == 400_001
    assert json_numbers._parsers.parser is not kept


def test_the_threads_parser_is_kept_unless_the_array_was_dense() -> None:
    """Up to 400,000 numbers the parser (and its buffers) stays for the next request; past
    that its tape is replaced by a fresh parser's."""
    kept = json_numbers._parsers.parser
    sparse = ("[" + ",".join(["0.123456789012345678"] * 1000) + "]").encode()
    assert json_numbers.numbers(sparse, np.dtype(np.float64)) is not None
    assert json_numbers._parsers.parser is kept
    dense = b"[" + b"1," * 400_000 + b"1]"
    array = json_numbers.numbers(dense, np.dtype(np.int64))
    assert array is not None and array.size == 400_001
    assert json_numbers._parsers.parser is not kept


def test_a_parser_still_held_elsewhere_is_replaced_rather_than_refusing_the_request() -> None:
    """A document kept alive past its request (a traceback holding it, say) makes simdjson
    refuse its parser: the thread starts a fresh one."""
    held = json_numbers._parsers.parser
    document = held.parse(b"[1, 2]")
    text = ("[" + ",".join(["0.5"] * 600) + "]").encode()
    array = json_numbers.numbers(text, np.dtype(np.float32))
    assert array is not None and array.size == 600 and bool((array == 0.5).all())
    assert json_numbers._parsers.parser is not held
    del document
