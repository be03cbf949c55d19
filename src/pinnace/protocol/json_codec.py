"""The V2 REST body codec: JSON, plus the binary tensor data extension.

A request body is a JSON header optionally followed by raw tensor bytes; the
``Inference-Header-Content-Length`` header says where the JSON ends. Inputs with a
``binary_data_size`` parameter take their data from the bytes after the JSON, in input order.
Outputs are returned as binary when the request asks (``binary_data`` per output or
``binary_data_output`` for all).
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec
import numpy as np
import orjson
import simdjson

from pinnace.errors import InvalidInputError
from pinnace.protocol.datatypes import DATATYPES, dtype_of
from pinnace.protocol.json_numbers import (
    LONG_DATA_BYTES,
    Document,
    array_numbers,
    numbers,
    read_document,
)
from pinnace.protocol.tensors import (
    MAX_RANK,
    array_from_bytes,
    array_to_bytes,
    as_bytes,
    element_count,
)
from pinnace.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor


class _WireInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class _LongWireInput(msgspec.Struct):
    """An input of a long body: its data kept as JSON text, for :func:`numbers`."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: msgspec.Raw = msgspec.Raw()
    """Empty when absent."""


class _WireOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class _WireRequest(msgspec.Struct):
    inputs: list[_WireInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_WireOutput] | None = None


class _LongWireRequest(msgspec.Struct):
    inputs: list[_LongWireInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_WireOutput] | None = None


class _WireTensorOut(msgspec.Struct, omit_defaults=True):
    name: str
    datatype: str
    shape: tuple[int, ...]
    """The array's own shape tuple: encoded as a JSON array without a copy to a list."""
    parameters: dict[str, Any] | None = None
    data: list[Any] | msgspec.Raw | None = None


class _WireResponse(msgspec.Struct, omit_defaults=True, kw_only=True):
    # Structs rather than dicts: msgspec encodes them about twice as fast (1.3 µs against
    # 2.1 µs for an iris response), and omit_defaults drops the absent keys as before.
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[_WireTensorOut]
    """Required, so it is written even when empty."""


_decoder = msgspec.json.Decoder(_WireRequest)
_long_decoder = msgspec.json.Decoder(_LongWireRequest)
_data_decoder = msgspec.json.Decoder(list[Any] | None)
_encoder = msgspec.json.Encoder()
_NO_BINARY = memoryview(b"")
_JSON_DTYPES = {name: dtype_of(name) for name in DATATYPES if name not in ("BYTES", "BF16")}
"""Datatypes whose JSON data numpy converts in one call."""
_ORJSON_DTYPES = frozenset(_JSON_DTYPES.values())
"""The numpy dtypes orjson writes itself (what a model returns, whatever its declared type)."""
_ORJSON_FROM = 16
"""Elements from which orjson writes an output faster than ``tolist`` and msgspec."""
ONE_PASS_BYTES: Final = 8192
"""JSON from which a request is parsed by simdjson in one pass (:func:`_from_document`)
rather than in two (msgspec, then simdjson for each long array). One pass saves msgspec's
scan over the numbers but reads the document through simdjson's Python objects, which costs
more than that scan below about 8 KB (256 floats, 5 KB: 11.8 against 10.5 µs; 1,024 floats,
21 KB: 26 against 31 µs; a 1 MiB FP32 tensor, 5 MB: 6.5 against 11.9 ms)."""


def decode_request(
    body: bytes | memoryview, json_length: int | None, *, max_elements: int
) -> InferRequest:
    """Decode a V2 request body. ``json_length`` is the binary extension header, if sent."""
    if json_length is None:
        header, binary = body, _NO_BINARY
    else:
        if json_length < 0 or json_length > len(body):
            raise InvalidInputError(
                f"Inference-Header-Content-Length {json_length} exceeds the body of {len(body)} bytes"
            )
        view = memoryview(body)
        header, binary = view[:json_length], view[json_length:]
    # A body too short to hold a long array decodes in one go. A long one is parsed by
    # simdjson whole when it has the usual shape; otherwise (and below ONE_PASS_BYTES) msgspec
    # keeps each input's data as text until it is known which path suits it.
    flats: dict[int, np.ndarray] | None = None
    try:
        if len(header) < LONG_DATA_BYTES:
            wire = _decoder.decode(header)
        else:
            whole = None
            # (The JSON part of a binary body, a memoryview, is rarely long: two steps. simdjson
            # skips a byte-order mark that msgspec refuses: two steps, which refuse it.)
            if len(header) >= ONE_PASS_BYTES and type(header) is bytes and not header.startswith(_BOM):
                whole = read_document(header, _from_document, header)
            wire, flats = whole or _from_long(_long_decoder.decode(header))
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"invalid inference request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec's error for a string that is not UTF-8
        raise InvalidInputError(f"malformed JSON: a string is not UTF-8 ({exc.reason})") from None
    except RecursionError:
        raise InvalidInputError("malformed JSON: nested too deeply") from None
    offset = 0
    inputs: list[Tensor] = []
    for item in wire.inputs:
        size = _binary_size(item)
        if flats and len(inputs) in flats:  # flats: None, or {input index: flat array}
            data = _shaped(item, flats[len(inputs)], max_elements)
        elif size is not None:
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"input {item.name!r} declares {size} binary bytes, but only "
                    f"{len(binary) - offset} remain in the body"
                )
            data = array_from_bytes(
                item.name, item.datatype, item.shape, binary[offset : offset + size], max_elements
            )
            offset += size
        else:
            data = _array_from_json(item, max_elements)
        inputs.append(Tensor(item.name, item.datatype, data, item.parameters))
    if offset != len(binary):
        raise InvalidInputError(f"{len(binary) - offset} bytes of binary data belong to no input")
    outputs = None
    if wire.outputs is not None:
        outputs = [RequestedOutput(name=o.name, parameters=o.parameters) for o in wire.outputs]
    return InferRequest(inputs, wire.id, wire.parameters, outputs)


def encode_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """(body, JSON header length when the body carries binary outputs, else None)."""
    params = request.parameters
    binary_all = bool(params and params.get("binary_data_output"))
    per_output = None
    if request.outputs:
        per_output = {
            o.name: bool(o.parameters.get("binary_data"))
            for o in request.outputs
            if o.parameters and "binary_data" in o.parameters
        }
    outputs: list[_WireTensorOut] = []
    blobs: list[bytes | memoryview] = []
    for tensor in response.outputs:
        array = tensor.data
        if per_output.get(tensor.name, binary_all) if per_output else binary_all:
            blob = array_to_bytes(tensor.datatype, array)
            size = len(blob) if isinstance(blob, bytes) else blob.nbytes
            outputs.append(
                _WireTensorOut(tensor.name, tensor.datatype, array.shape, {"binary_data_size": size})
            )
            blobs.append(blob)
        else:
            if array.size >= _ORJSON_FROM and array.dtype in _ORJSON_DTYPES and tensor.datatype != "BF16":
                # Long numeric outputs straight from the array: a third of the time of tolist
                # and msgspec for 1 MiB of FP32, and FP32 in its shortest exact form (0.1, not
                # 0.10000000149011612). ravel: a view when C-contiguous, else the row-major
                # copy orjson needs.
                data: list[Any] | msgspec.Raw = msgspec.Raw(
                    orjson.dumps(array.ravel(), option=orjson.OPT_SERIALIZE_NUMPY)
                )
            else:
                data = json_data(tensor.datatype, array)
            outputs.append(_WireTensorOut(tensor.name, tensor.datatype, array.shape, None, data))
    doc = _WireResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        parameters=response.parameters or None,
        outputs=outputs,
    )
    header = _encoder.encode(doc)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def json_data(datatype: str, array: np.ndarray) -> list[Any]:
    """A tensor's ``data`` as a flat JSON list (row-major)."""
    flat = array if array.ndim == 1 else array.ravel()
    if datatype == "BYTES":
        return [_text(item) for item in flat]
    if datatype == "BF16":
        return (flat.astype(np.uint32) << 16).view(np.float32).tolist()  # type: ignore[no-any-return]
    return flat.tolist()  # type: ignore[no-any-return]


def encode_json(value: Any) -> bytes:
    """Encode metadata, index or error documents."""
    return _encoder.encode(value)


def _binary_size(item: _WireInput) -> int | None:
    if not item.parameters or "binary_data_size" not in item.parameters:
        return None
    size = item.parameters["binary_data_size"]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInputError(f"input {item.name!r}: binary_data_size must be a non-negative integer")
    if item.data is not None:
        raise InvalidInputError(f"input {item.name!r} has both binary data and JSON data")
    return size


def _from_long(wire: _LongWireRequest) -> tuple[_WireRequest, dict[int, np.ndarray]]:
    """The request as the one-go decoder gives it, and {input index: flat array} for the
    inputs :func:`numbers` took. Every input's data is decoded here, before any is checked,
    as the one-go decoder does: the same error comes first."""
    items = []
    flats = {}
    for index, long_item in enumerate(wire.inputs):
        item, flat = _long_input(long_item, index)
        items.append(item)
        if flat is not None:
            flats[index] = flat
    return _WireRequest(items, wire.id, wire.parameters, wire.outputs), flats


def _long_input(item: _LongWireInput, index: int) -> tuple[_WireInput, np.ndarray | None]:
    """The input with its data decoded; or, when its data is a long flat numeric array,
    without data and with that array (flat, for :func:`_shaped`)."""
    text = bytes(item.data)
    dtype = _JSON_DTYPES.get(item.datatype)
    shape = item.shape
    binary = item.parameters and "binary_data_size" in item.parameters
    if len(text) >= LONG_DATA_BYTES and dtype is not None and not binary:
        flat = numbers(text, dtype)
        if flat is not None:
            return _WireInput(item.name, shape, item.datatype, item.parameters), flat
    try:
        data = _data_decoder.decode(text) if text else None
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"invalid inference request: {_at(exc, index)}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"malformed JSON: {_at(exc, index)}") from None
    return _WireInput(item.name, shape, item.datatype, item.parameters, data), None


_BOM: Final = b"\xef\xbb\xbf"
_MOST_OBJECTS: Final = 256
"""Objects ("{") a body may hold for :func:`_from_document`: no deeper than that, so never
past msgspec's own depth limit, which the two-step path would reach."""


class _Unusual(Exception):
    """Something :func:`_from_document` leaves to the two-step decoder (and its messages)."""


def _from_document(
    document: Document, text: bytes
) -> tuple[_WireRequest, dict[int, np.ndarray]] | None:
    """What :func:`_from_long` gives, read from the whole body parsed by simdjson in one pass
    (the two-step path scans every number twice: msgspec skips them, simdjson parses them).

    Only the usual shape of a request is read here: every field of the expected type, no
    key given twice, and no array anywhere but the request's own (inputs, outputs, each
    shape and data). Anything else, valid or not, returns None and the two-step decoder
    decides, with its messages, so that what is accepted never depends on the path.
    """
    if not isinstance(document, simdjson.Object):
        return None
    try:
        return _read_request(text, document)
    except (_Unusual, ValueError, TypeError, RuntimeError):
        return None


def _read_request(text: bytes, document: Document) -> tuple[_WireRequest, dict[int, np.ndarray]]:
    keys = _keys(document)
    request_id = _field(document, keys, "id")
    if request_id is not None and type(request_id) is not str:
        raise _Unusual
    parameters = _parameters(_field(document, keys, "parameters"))
    arrays = 0  # arrays the request's fields account for
    outputs = None
    listed = _field(document, keys, "outputs")
    if listed is not None:
        outputs = [_output(item) for item in _array(listed)]
        arrays += 1
    parsed = [_input(item) for item in _array(_field(document, keys, "inputs"))]
    arrays += 1 + sum(1 + (data is not None) for _, data in parsed)
    if _count(text, b"[", arrays) != arrays:  # a nested array, or a "[" in a string
        raise _Unusual
    if _count(text, b"{", _MOST_OBJECTS) > _MOST_OBJECTS:
        # Possibly nested deeper than msgspec goes (its limit is Python's recursion limit, less
        # the caller's depth): two steps, which refuse it as msgspec does.
        raise _Unusual
    inputs = []
    flats = {}
    for index, (item, data) in enumerate(parsed):
        dtype = _JSON_DTYPES.get(item.datatype)
        flat = None
        binary = item.parameters and "binary_data_size" in item.parameters
        if data is not None and dtype is not None and not binary:
            flat = array_numbers(data, dtype)
        if flat is not None:
            flats[index] = flat
        elif data is not None:
            item.data = data.as_list()
        inputs.append(item)
    return _WireRequest(inputs, request_id, parameters, outputs), flats


def _input(item: Document) -> tuple[_WireInput, Document | None]:
    """An input without its data, and its data (a simdjson array, or None)."""
    keys = _keys(item)
    name, datatype = _field(item, keys, "name"), _field(item, keys, "datatype")
    shape = _array(_field(item, keys, "shape")).as_list()
    if type(name) is not str or type(datatype) is not str or any(type(d) is not int for d in shape):
        raise _Unusual
    data = _field(item, keys, "data")
    if data is not None:
        _array(data)
    return _WireInput(name, shape, datatype, _parameters(_field(item, keys, "parameters"))), data


def _output(item: Document) -> _WireOutput:
    keys = _keys(item)
    name = _field(item, keys, "name")
    if type(name) is not str:
        raise _Unusual
    return _WireOutput(name, _parameters(_field(item, keys, "parameters")))


def _parameters(value: Document) -> dict[str, Any] | None:
    if value is None:
        return None
    _keys(value)
    parameters: dict[str, Any] = value.as_dict()
    return parameters


def _array(value: Document) -> Document:
    if not isinstance(value, simdjson.Array):
        raise _Unusual
    return value


def _keys(value: Document) -> set[str]:
    """An object's keys, none given twice (msgspec keeps the last, simdjson finds the first)."""
    if not isinstance(value, simdjson.Object):
        raise _Unusual
    keys = set(value.keys())
    if len(keys) != len(value):
        raise _Unusual
    return keys


def _field(value: Document, keys: set[str], key: str) -> Document:
    """``value[key]``, or None when absent (simdjson's ``get`` of an absent key raises and
    catches a KeyError inside: 2.4 µs, against 0.1 µs for a key that is there)."""
    return value[key] if key in keys else None


def _count(text: bytes, byte: bytes, most: int) -> int:
    """How many times ``byte`` is in ``text``, counting no further than one past ``most``
    (``find`` is a ``memchr``; ``count`` is several times slower)."""
    found, at = 0, text.find(byte)
    while at != -1 and found <= most:
        found += 1
        at = text.find(byte, at + 1)
    return found


def _at(exc: msgspec.MsgspecError, index: int) -> str:
    """The error of decoding one input's data alone, placed in the request as the one-go
    decoder places it (``$[3]`` is ``$.inputs[0].data[3]``)."""
    where = f"$.inputs[{index}].data"
    message = str(exc)
    return message.replace("`$", f"`{where}", 1) if "`$" in message else f"{message} - at `{where}`"


def _shaped(item: _WireInput, flat: np.ndarray, max_elements: int) -> np.ndarray:
    """The checks of :func:`_array_from_json`, for an array :func:`numbers` made (the shape's
    own checks included: a long array is rare enough to run them all)."""
    count = element_count(item.name, item.shape, max_elements)
    if flat.size != count:
        raise _wrong_count(item, flat.size, count)
    return flat.reshape(item.shape)


def _array_from_json(item: _WireInput, max_elements: int) -> np.ndarray:
    shape, data = item.shape, item.data
    dtype = _JSON_DTYPES.get(item.datatype)
    if dtype is None or data is None or len(shape) > MAX_RANK or (shape and min(shape) < 0):
        return _unusual_array_from_json(item, max_elements)
    count = math.prod(shape)
    if count > max_elements:
        element_count(item.name, shape, max_elements)  # raises, with the message
    try:
        array = np.array(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(
            f"input {item.name!r}: data does not fit datatype {item.datatype}: {_first_line(exc)}"
        ) from None
    if array.size != count:
        raise _wrong_count(item, array.size, count)
    return array.reshape(shape)


def _unusual_array_from_json(item: _WireInput, max_elements: int) -> np.ndarray:
    """BYTES, BF16, unknown datatypes, absent data and bad shapes: each refused or converted
    with its own message."""
    count = element_count(item.name, item.shape, max_elements)
    dtype_of(item.datatype)  # an unknown datatype is refused by name
    if item.data is None:
        raise InvalidInputError(f"input {item.name!r} has no data")
    if item.datatype == "BF16":
        raise InvalidInputError(f"input {item.name!r}: BF16 is only accepted as binary data")
    # What is left is BYTES: each element str or bytes, in nested lists.
    flat = _flatten(item.data)
    array = np.empty(len(flat), dtype=object)
    array[:] = [as_bytes(v) for v in flat]
    if array.size != count:
        raise _wrong_count(item, array.size, count)
    return array.reshape(item.shape)


def _wrong_count(item: _WireInput, size: int, count: int) -> InvalidInputError:
    return InvalidInputError(
        f"input {item.name!r}: {size} data elements, but shape {item.shape} needs {count}"
    )


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                if len(stack) > 16:
                    raise InvalidInputError("BYTES data nested too deeply")
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _text(item: object) -> Any:
    if isinstance(item, bytes):
        try:
            return item.decode()
        except UnicodeDecodeError:
            return item.decode("latin-1")
    return item if isinstance(item, str) else str(item)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
