"""Tensor bytes ↔ numpy, shared by the REST binary extension and gRPC raw contents.

Fixed-size datatypes are little-endian and row-major; arrays are views over the received
buffer (zero-copy, read-only). ``BYTES`` elements are each a 4-byte little-endian length
followed by that many bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from pinnace.errors import InvalidInputError, PayloadTooLargeError
from pinnace.protocol.datatypes import dtype_of

MAX_RANK = 16
_LEN = struct.Struct("<I")


def element_count(name: str, shape: Sequence[int], max_elements: int) -> int:
    """Product of ``shape`` after checking every dimension, before anything is allocated."""
    if len(shape) > MAX_RANK:
        raise InvalidInputError(f"input {name!r} has {len(shape)} dimensions; at most {MAX_RANK}")
    for dim in shape:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 0:
            raise InvalidInputError(f"input {name!r} has an invalid dimension {dim!r} in shape {list(shape)}")
    count = math.prod(shape)
    if count > max_elements:
        raise PayloadTooLargeError(
            f"input {name!r} with shape {list(shape)} has {count} elements; the limit is {max_elements}"
        )
    return count


def array_from_bytes(
    name: str, datatype: str, shape: Sequence[int], buffer: bytes | memoryview, max_elements: int
) -> np.ndarray:
    """An array over ``buffer`` for a tensor of ``datatype`` and ``shape``."""
    count = element_count(name, shape, max_elements)
    dtype = dtype_of(datatype)
    if datatype == "BYTES":
        return _bytes_elements(name, buffer, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInputError(
            f"input {name!r}: {len(buffer)} bytes of data, but shape {list(shape)} of {datatype} "
            f"needs {expected}"
        )
    return np.frombuffer(buffer, dtype=dtype.newbyteorder("<"), count=count).reshape(shape)


def array_to_bytes(datatype: str, array: np.ndarray) -> bytes | memoryview:
    """The wire bytes of ``array``; a view, without copying, when it is already contiguous."""
    if datatype == "BYTES":
        return serialize_bytes_elements(array)
    wire = array.astype(array.dtype.newbyteorder("<"), copy=False)
    if not wire.flags.c_contiguous:
        wire = np.ascontiguousarray(wire)
    return wire.data.cast("B")


def serialize_bytes_elements(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        raw = as_bytes(item)
        parts.append(_LEN.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def as_bytes(item: object) -> bytes:
    """One ``BYTES`` element as bytes (strings are UTF-8 encoded)."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, bytearray | memoryview | np.bytes_):
        return bytes(item)
    return str(item).encode()


def _bytes_elements(name: str, buffer: bytes | memoryview, count: int) -> np.ndarray:
    view = memoryview(buffer)
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInputError(f"input {name!r}: BYTES data ends before element {i}")
        (length,) = _LEN.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInputError(f"input {name!r}: BYTES element {i} runs past the data")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInputError(f"input {name!r}: {len(view) - offset} bytes left after {count} BYTES elements")
    return out
