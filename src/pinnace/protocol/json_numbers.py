"""Long numeric JSON arrays straight to numpy, without a Python object per number.

Decoding ``"data": [0.1, 0.2, ...]`` the usual way makes a Python float per element (msgspec)
and then reads them all back (``np.array``): about 11 µs for 256 floats, 14 ms for a 1 MiB
FP32 tensor. simdjson parses the array's text into one buffer of doubles or 64-bit integers
instead, which numpy takes as it is: half the time at 256 floats, and the gap grows with the
array. Below about 50 numbers the two calls cost more than they save, so short arrays keep
the usual path (see ``LONG_DATA_BYTES``).

Only flat arrays are taken (a nested one is left to the usual path, which refuses ragged
nesting), and any number this path cannot represent exactly as the target type is left to
the usual path too, so that what is accepted, and the message of what is refused, never
depend on which path ran.
"""

from __future__ import annotations

import threading
from typing import Any, Final, Literal

import numpy as np
import simdjson

LONG_DATA_BYTES: Final = 1024
"""JSON text from which an array takes this path: about 50 floats, where it starts to pay."""

_BufferType = Literal["d", "i", "u"]
_DOUBLES: Final[tuple[_BufferType, np.dtype]] = ("d", np.dtype(np.float64))
_INT64: Final[tuple[_BufferType, np.dtype]] = ("i", np.dtype(np.int64))
_READ_AS: Final[dict[np.dtype, tuple[_BufferType, np.dtype]]] = {
    **{np.dtype(t): _DOUBLES for t in (np.float16, np.float32, np.float64)},
    **{np.dtype(t): _INT64 for t in (np.int8, np.int16, np.int32, np.int64)},
    # Unsigned types below 64 bits read as signed 64-bit, then range-checked like the rest.
    **{np.dtype(t): _INT64 for t in (np.uint8, np.uint16, np.uint32)},
    np.dtype(np.uint64): ("u", np.dtype(np.uint64)),
}
"""Per target dtype: simdjson's buffer type and the dtype that buffer holds (BOOL: none)."""

_KEPT_PARSER_BYTES: Final = 8 << 20
_KEPT_PARSER_NUMBERS: Final = 400_000
"""A parser keeps the buffers of the largest document it parsed (16 bytes of tape a number,
4 of index a comma, a copy of the text): 11 MiB after a 1 MiB FP32 tensor, 5 MB of text. Kept,
they save their allocation and page faults on the next request (22 → 12 ms to decode that
tensor). Past 8 MiB of text an array gets a parser of its own; past 400,000 numbers the
thread's parser is replaced after use, so what stays is at most about 18 MiB a thread."""


_STILL_IN_USE: Final = "Tried to re-use a parser"
"""How pysimdjson refuses to parse while a document of the parser's is still referenced."""


class _Parsers(threading.local):
    """One parser per thread: a simdjson parser serves one document at a time."""

    def __init__(self) -> None:
        self.parser = simdjson.Parser()


_parsers = _Parsers()

Document = Any
"""What simdjson parsed: a ``simdjson.Object``, ``simdjson.Array`` or a plain value."""


def numbers(text: bytes | memoryview, dtype: np.dtype, *, flat: bool = False) -> np.ndarray | None:
    """``text`` (a JSON array) as a flat ``dtype`` array, or None when the usual path must
    decide: not a flat array of numbers (a nested or ragged one included), a number out of
    the type's range, a bool dtype. ``flat``: the caller has made sure the text holds no
    array (simdjson would flatten one); otherwise it is checked here (bytes only)."""
    wide = _READ_AS.get(dtype)
    if wide is None or not (flat or (isinstance(text, bytes) and _flat(text))):
        return None
    own = len(text) > _KEPT_PARSER_BYTES
    document = _parse(text, own)
    if type(document) is not simdjson.Array:
        return None  # refused by simdjson (the usual path then says why), or not an array
    of_type, wide_dtype = wide
    try:
        buffer = document.as_buffer(of_type=of_type)  # a copy: the parser may be reused at once
    except (ValueError, TypeError, RuntimeError):
        # Not numbers of that kind, or out of its range (simdjson raises all three: a big
        # integer is a RuntimeError): the usual path decides, with its own message.
        return None
    finally:
        del document  # the parser refuses to be dropped while a document of its is alive
    values = np.frombuffer(buffer, wide_dtype)
    if not own and values.size > _KEPT_PARSER_NUMBERS:
        _parsers.parser = simdjson.Parser()
    if dtype.kind != "f" and wide_dtype != dtype and values.size:
        limits = np.iinfo(dtype)
        if values.min() < limits.min or values.max() > limits.max:
            return None
    converted: np.ndarray = values.astype(dtype, copy=False)
    return converted


def _flat(text: bytes) -> bool:
    """A JSON array with no array inside it: numbers hold no brackets, so a flat array of
    numbers has exactly one "[" (one ``memchr`` over the text)."""
    return text.startswith(b"[") and text.find(b"[", 1) == -1


def _parse(text: bytes | memoryview, own: bool) -> Document | None:
    """simdjson's document for ``text``, by a parser of its own or the thread's; None when
    simdjson refuses the text (malformed, or an integer past 64 bits)."""
    try:
        if own:
            return simdjson.Parser().parse(text)
        try:
            return _parsers.parser.parse(text)
        except RuntimeError as exc:
            if not str(exc).startswith(_STILL_IN_USE):
                raise
        # A document of this parser's is still referenced (a traceback kept alive elsewhere):
        # start a fresh parser rather than refuse the request.
        _parsers.parser = simdjson.Parser()
        return _parsers.parser.parse(text)
    except (ValueError, RuntimeError):
        return None
