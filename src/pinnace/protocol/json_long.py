"""Long JSON request bodies: their numeric arrays lifted out for simdjson, the rest to msgspec.

A body of ``LONG_DATA_BYTES`` or more may hold long numeric arrays, which are worth parsing
into one buffer each (:mod:`pinnace.protocol.json_numbers`) rather than into a Python float per
number. Two ways to get there:

* **lifted** (a body given as bytes, the usual case): each ``"data":[...]`` array is cut out
  of the body and a short marker put in its place. msgspec decodes what is left, a few hundred
  bytes, so it never scans the numbers; simdjson parses each array that lands in an input's
  ``data``. Anything unusual (an array that lands elsewhere, any error at all) sends the body
  to the two steps, so what is accepted, and the message of what is refused, never depend on
  the path;
* **two steps** (any body): msgspec decodes the structure, keeping each input's data as raw
  text; simdjson then parses each long flat numeric array, and msgspec the rest.

Both give what :func:`decode_long` returns: the request's structs
(:mod:`pinnace.protocol.json_wire`) and the arrays simdjson made, by input index.

Why a lifted array is the input's data and nothing else: the pattern ``"data":[`` cannot lie
inside a JSON string (its second quote, unescaped, would end the string), so it is always a
key ending in ``data`` followed by an array. Each array is cut at its first ``]``, and only
when no ``[`` comes before that: a flat array, whose first ``]`` closes it unless a string
inside holds one, which leaves the cut text malformed (refused when parsed, and the body
goes the two-step way). The marker is a string; the body left over must hold exactly as many
markers as were put in, and exactly that many inputs must have a marker for their data.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import numpy as np

from pinnace.errors import InvalidInputError
from pinnace.protocol.json_numbers import LONG_DATA_BYTES, numbers
from pinnace.protocol.json_wire import (
    JSON_DTYPES,
    LongWireInput,
    LongWireRequest,
    WireInput,
    WireRequest,
)

_DATA_ARRAY: Final = b'"data":['
_VIEW_FROM: Final = 65536
"""Array text from which simdjson is given a view of the body rather than a copy: a copy
is the faster to parse when small (5 KB: 6.6 against 6.8 µs), a view saves copying a large
one (a 1 MiB FP32 tensor's 5 MB: 6.2 against 6.7 ms)."""
_MARKER: Final = b'"\\u0000"'
_MARKER_RAW: Final = msgspec.Raw(_MARKER)
_long_decoder = msgspec.json.Decoder(LongWireRequest)
_data_decoder = msgspec.json.Decoder(list[Any] | None)

Decoded = tuple[WireRequest, dict[int, np.ndarray]]


def decode_long(header: bytes | memoryview) -> Decoded:
    """The request, and {input index: flat array} for the inputs simdjson took.

    Raises msgspec's errors as the one-go decoder would (the caller words them).
    """
    # (The JSON part of a binary body, a memoryview, is rarely long: two steps.)
    lifted = _lifted(header) if type(header) is bytes else None
    return lifted or _from_long(_long_decoder.decode(header))


def _lifted(body: bytes) -> Decoded | None:
    """What :func:`decode_long` gives, with the data arrays lifted out of the body before
    msgspec reads it; None when the two steps must decide (see the module docstring)."""
    pieces: list[bytes] = []
    arrays: list[bytes | memoryview] = []
    find = body.find
    at = copied = 0
    while (key := find(_DATA_ARRAY, at)) != -1:
        start = key + len(_DATA_ARRAY) - 1
        end = find(b"]", start) + 1
        if end == 0:
            return None  # malformed
        at = end
        if find(b"[", start + 1, end) != -1:
            at = start + 1  # nested: left in the body, for the two steps' usual path
            continue
        pieces += (body[copied:start], _MARKER)
        arrays.append(memoryview(body)[start:end] if end - start >= _VIEW_FROM else body[start:end])
        copied = end
    if not arrays:
        return None
    pieces.append(body[copied:])
    rest = b"".join(pieces)
    if rest.count(_MARKER) != len(arrays):
        return None  # the body held a marker of its own
    try:
        wire = _long_decoder.decode(rest)
        return _with_lifted(wire, arrays)
    except (msgspec.MsgspecError, InvalidInputError, UnicodeDecodeError, RecursionError):
        return None  # the two steps decide, and word the error


def _with_lifted(wire: LongWireRequest, arrays: list[bytes | memoryview]) -> Decoded | None:
    items = []
    flats = {}
    taken = 0
    for index, long_item in enumerate(wire.inputs):
        if long_item.data == _MARKER_RAW:
            # Every marker left in the body is one put in, so there are enough arrays.
            item, flat = _long_input(long_item, index, arrays[taken])
            taken += 1
        else:
            item, flat = _long_input(long_item, index)
        items.append(item)
        if flat is not None:
            flats[index] = flat
    if taken != len(arrays):
        return None  # a marker landed outside the inputs' data (a parameter, an unknown key)
    return WireRequest(items, wire.id, wire.parameters, wire.outputs), flats


def _from_long(wire: LongWireRequest) -> Decoded:
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


def _long_input(
    item: LongWireInput, index: int, lifted: bytes | memoryview | None = None
) -> tuple[WireInput, np.ndarray | None]:
    """The input with its data decoded; or, when its data is a long flat numeric array,
    without data and with that array (flat, for :func:`_shaped`). ``lifted``: the data's
    text when it was lifted out of the body (a flat array, if well formed)."""
    text = bytes(item.data) if lifted is None else lifted
    shape = item.shape
    dtype = _numeric_dtype(item.datatype, item.parameters)
    if len(text) >= LONG_DATA_BYTES and dtype is not None:
        # A lifted array is known to be flat; the two steps' text is checked.
        flat = numbers(text, dtype, flat=lifted is not None)
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


def _at(exc: msgspec.MsgspecError, index: int) -> str:
    """The error of decoding one input's data alone, placed in the request as the one-go
    decoder places it (``$[3]`` is ``$.inputs[0].data[3]``)."""
    where = f"$.inputs[{index}].data"
    message = str(exc)
    return message.replace("`$", f"`{where}", 1) if "`$" in message else f"{message} - at `{where}`"
