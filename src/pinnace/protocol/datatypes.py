"""The V2 tensor datatypes and their numpy equivalents.

``BYTES`` tensors are numpy arrays of dtype ``object`` whose elements are ``bytes``. ``BF16``
has no numpy dtype; it is carried as raw ``uint16`` bit patterns so it can pass through
pinnace (binary extension only) to a runtime that understands it.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from pinnace.errors import InvalidInputError

DATATYPE_TO_DTYPE: Final[dict[str, np.dtype]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
    "BYTES": np.dtype(object),
}

_DTYPE_TO_DATATYPE: Final[dict[np.dtype, str]] = {
    dtype: name for name, dtype in DATATYPE_TO_DTYPE.items() if name != "BF16"
}

DATATYPES: Final[frozenset[str]] = frozenset(DATATYPE_TO_DTYPE)

_NAMED: Final[dict[str, str]] = {
    **{dtype.name: name for name, dtype in DATATYPE_TO_DTYPE.items() if name not in ("BF16", "BYTES")},
    "bfloat16": "BF16",
    "string": "BYTES",
}


def datatype_of_name(name: str) -> str | None:
    """The V2 datatype for a framework's dtype name ("float32", "bfloat16", "string"), as
    TensorFlow and Keras spell them; None when V2 has no such datatype."""
    return _NAMED.get(name)


FLOAT_DATATYPES: Final[frozenset[str]] = frozenset({"FP16", "FP32", "FP64", "BF16"})


def dtype_of(datatype: str) -> np.dtype:
    """The numpy dtype for a V2 datatype name, or a clear error naming it."""
    try:
        return DATATYPE_TO_DTYPE[datatype]
    except KeyError:
        raise InvalidInputError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(sorted(DATATYPES))}"
        ) from None


def datatype_of(dtype: np.dtype) -> str:
    """The V2 datatype name for a numpy dtype (strings of any width map to ``BYTES``)."""
    found = _DTYPE_TO_DATATYPE.get(dtype)
    if found is not None:
        return found
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    raise InvalidInputError(f"numpy dtype {dtype} has no Open Inference Protocol datatype")


def element_size(datatype: str) -> int:
    """Bytes per element on the wire; ``BYTES`` elements have no fixed size (returns 0)."""
    if datatype == "BYTES":
        return 0
    return dtype_of(datatype).itemsize
