"""Small helpers the framework runtimes share: option parsing, safe error text, and fitting
outputs to the manifest signature.

Nothing here imports a framework; each runtime imports its own lazily.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from pinnace.errors import ModelLoadError
from pinnace.manifest.schema import Manifest, TensorSignature
from pinnace.protocol.datatypes import DATATYPE_TO_DTYPE

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# "[06:12:27] /__w/xgboost/src/common/json.cc:409: " and similar C++ logging prefixes.
_CPP_PREFIX = re.compile(r"^\s*(\[[0-9:]+\]\s*)?(\S+\.(cc|cpp|h|hpp):\d+:\s*)+")
# OpenVINO and other C++ libraries open with lines that only say where the error was raised.
_LOCATION_LINE = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:?)$")
_ABS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:/[^\s'\"`:,;()\[\]]+){2,}")
_MAX_MESSAGE = 240


def clean_error(exc: BaseException | str, *, limit: int = _MAX_MESSAGE) -> str:
    """One line of a framework's error that is safe to show a client.

    Framework messages carry absolute paths, C++ source locations, colour codes and whole
    stack traces; keep the first meaningful line, with every absolute path cut to its last part.
    """
    text = _ANSI.sub("", str(exc))
    line = ""
    for raw in text.splitlines():
        candidate = _CPP_PREFIX.sub("", raw).strip()
        if _LOCATION_LINE.match(candidate):
            continue
        if candidate and not candidate.startswith(("Traceback", "Stack trace", "File ")):
            line = candidate
            break
    if not line:
        line = type(exc).__name__ if isinstance(exc, BaseException) else "unknown error"
    line = _ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def check_options(manifest: Manifest, runtime: str, known: Iterable[str]) -> dict[str, Any]:
    """The manifest's ``options``, refusing keys this runtime does not know (typos fail loudly)."""
    allowed = set(known)
    unknown = sorted(set(manifest.options) - allowed)
    if unknown:
        raise ModelLoadError(
            f"options.{unknown[0]} is not an option of the {runtime} runtime; "
            f"known options: {', '.join(sorted(allowed)) or 'none'}"
        )
    return dict(manifest.options)


def int_option(options: Mapping[str, Any], key: str, default: int | None, *, minimum: int = 0) -> int | None:
    """An integer option (or its default), refusing booleans, text and values below ``minimum``."""
    value = options.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelLoadError(f"options.{key} must be an integer >= {minimum}")
    return value


def str_option(options: Mapping[str, Any], key: str, default: str, choices: Iterable[str] | None = None) -> str:
    """A text option (or its default), checked against ``choices`` when given."""
    value = options.get(key, default)
    if not isinstance(value, str):
        raise ModelLoadError(f"options.{key} must be text")
    if choices is not None:
        allowed = list(choices)
        if value not in allowed:
            raise ModelLoadError(f"options.{key} must be one of {', '.join(allowed)}")
    return value


def fit_output(array: np.ndarray, signature: TensorSignature | None) -> np.ndarray:
    """``array`` in the datatype and rank the manifest declares for it.

    A model that returns ``[n]`` where the manifest (often an imported one) says ``[-1, 1]``, or
    float64 where it says FP32, is answered in the declared form; element counts never change.
    """
    if signature is None:
        return array
    dtype = DATATYPE_TO_DTYPE.get(signature.datatype)
    if dtype is not None and signature.datatype not in ("BYTES", "BF16") and array.dtype != dtype:
        array = array.astype(dtype)
    shape = signature.shape
    if shape and array.ndim != len(shape) and shape.count(-1) <= 1 and array.ndim >= 1:
        target = [array.shape[0] if i == 0 and d == -1 else d for i, d in enumerate(shape)]
        if -1 not in target and int(np.prod(target)) == array.size:
            array = array.reshape(target)
    return array


def signatures_by_name(signatures: Iterable[TensorSignature]) -> dict[str, TensorSignature]:
    return {s.name: s for s in signatures}
