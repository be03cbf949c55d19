"""Long JSON request bodies: one simdjson pass when they have the usual shape, else two steps.

A body of ``LONG_DATA_BYTES`` or more may hold long numeric arrays, which are worth parsing
into one buffer each (:mod:`pinnace.protocol.json_numbers`) rather than into a Python float per
number. Two ways to get there:

* **two steps** (any body): msgspec decodes the structure, keeping each input's data as raw
  text; simdjson then parses each long flat numeric array, and msgspec the rest;
* **one pass** (``ONE_PASS_BYTES`` and more, of the usual shape): simdjson parses the whole
  body once, and the request is read from its document, which saves msgspec's scan over the
  numbers. Anything unusual, valid or not, is left to the two steps, so what is accepted
  never depends on the path.

Both give what :func:`decode_long` returns: the request's structs
(:mod:`pinnace.protocol.json_wire`) and the arrays simdjson made, by input index.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import numpy as np
import simdjson

from pinnace.errors import InvalidInputError
from pinnace.protocol.json_numbers import (
    LONG_DATA_BYTES,
    Document,
    array_numbers,
    numbers,
    read_document,
)
from pinnace.protocol.json_wire import (
    JSON_DTYPES,
    LongWireInput,
    LongWireRequest,
    WireInput,
    WireOutput,
    WireRequest,
)

ONE_PASS_BYTES: Final = 8192
"""JSON from which a request is parsed by simdjson in one pass (:func:`_from_document`)
rather than in two (msgspec, then simdjson for each long array). One pass saves msgspec's
scan over the numbers but reads the document through simdjson's Python objects, which costs
more than that scan below about 8 KB (256 floats, 5 KB: 11.8 against 10.5 µs; 1,024 floats,
21 KB: 26 against 31 µs; a 1 MiB FP32 tensor, 5 MB: 6.5 against 11.9 ms)."""

_BOM: Final = b"\xef\xbb\xbf"
_MOST_OBJECTS: Final = 256
"""Objects ("{") a body may hold for :func:`_from_document`: no deeper than that, so never
past msgspec's own depth limit, which the two-step path would reach."""

_long_decoder = msgspec.json.Decoder(LongWireRequest)
_data_decoder = msgspec.json.Decoder(list[Any] | None)


def decode_long(header: bytes | memoryview) -> tuple[WireRequest, dict[int, np.ndarray]]:
    """The request, and {input index: flat array} for the inputs simdjson took.

    Raises msgspec's errors as the one-go decoder would (the caller words them).
    """
    whole = None
    # (The JSON part of a binary body, a memoryview, is rarely long: two steps. simdjson skips
    # a byte-order mark that msgspec refuses: two steps, which refuse it.)
    if len(header) >= ONE_PASS_BYTES and type(header) is bytes and not header.startswith(_BOM):
        whole = read_document(header, _from_document, header)
    return whole or _from_long(_long_decoder.decode(header))


def _from_long(wire: LongWireRequest) -> tuple[WireRequest, dict[int, np.ndarray]]:
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
    return WireRequest(items, wire.id, wire.parameters, wire.outputs), flats


def _long_input(item: LongWireInput, index: int) -> tuple[WireInput, np.ndarray | None]:
    """The input with its data decoded; or, when its data is a long flat numeric array,
    without data and with that array (flat, for :func:`_shaped`)."""
    text = bytes(item.data)
    shape = item.shape
    dtype = _numeric_dtype(item.datatype, item.parameters)
    if len(text) >= LONG_DATA_BYTES and dtype is not None:
        flat = numbers(text, dtype)
        if flat is not None:
            return WireInput(item.name, shape, item.datatype, item.parameters), flat
    try:
        data = _data_decoder.decode(text) if text else None
    except msgspec.ValidationError as exc:
        raise InvalidInputError(f"invalid inference request: {_at(exc, index)}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInputError(f"malformed JSON: {_at(exc, index)}") from None
    return WireInput(item.name, shape, item.datatype, item.parameters, data), None


def _numeric_dtype(datatype: str, parameters: dict[str, Any] | None) -> np.dtype | None:
    """The dtype simdjson may read an input's JSON data as; None when msgspec must decode it
    (not a numeric datatype, or data declared binary: refused later for carrying both)."""
    if parameters and "binary_data_size" in parameters:
        return None
    return JSON_DTYPES.get(datatype)


class _Unusual(Exception):
    """Something :func:`_from_document` leaves to the two-step decoder (and its messages)."""


def _from_document(
    document: Document, text: bytes
) -> tuple[WireRequest, dict[int, np.ndarray]] | None:
    """What :func:`_from_long` gives, read from the whole body parsed by simdjson in one pass
    (the two-step path scans every number twice: msgspec skips them, simdjson parses them).

    Only the usual shape of a request is read here: every field of the expected type, no
    key given twice, and no array anywhere but the request's own (inputs, outputs, each
    shape and data). Anything else, valid or not, returns None and the two-step decoder
    decides, with its messages, so that what is accepted never depends on the path.
    """
    try:
        return _read_request(text, document)
    except (_Unusual, ValueError, TypeError, RuntimeError):
        return None


def _read_request(text: bytes, document: Document) -> tuple[WireRequest, dict[int, np.ndarray]]:
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
        if data is not None:
            dtype = _numeric_dtype(item.datatype, item.parameters)
            flat = array_numbers(data, dtype) if dtype is not None else None
            if flat is not None:
                flats[index] = flat
            else:
                item.data = data.as_list()
        inputs.append(item)
    return WireRequest(inputs, request_id, parameters, outputs), flats


def _input(item: Document) -> tuple[WireInput, Document | None]:
    """An input without its data, and its data (a simdjson array, or None)."""
    keys = _keys(item)
    name, datatype = _field(item, keys, "name"), _field(item, keys, "datatype")
    shape = _array(_field(item, keys, "shape")).as_list()
    if type(name) is not str or type(datatype) is not str or any(type(d) is not int for d in shape):
        raise _Unusual
    data = _field(item, keys, "data")
    if data is not None:
        _array(data)
    return WireInput(name, shape, datatype, _parameters(_field(item, keys, "parameters"))), data


def _output(item: Document) -> WireOutput:
    keys = _keys(item)
    name = _field(item, keys, "name")
    if type(name) is not str:
        raise _Unusual
    return WireOutput(name, _parameters(_field(item, keys, "parameters")))


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
