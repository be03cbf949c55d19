"""Checking a decoded request against a model's signature, before anything is queued.

Everything that depends only on the manifest is worked out once per model version, so that a
request costs a few comparisons per input: its datatype, its shape (for the usual signature,
where only the batch axis varies, one tuple comparison), finiteness, and its batch key.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Final

import numpy as np

from pinnace.errors import InvalidInputError
from pinnace.manifest.schema import Manifest, TensorSignature
from pinnace.protocol.types import InferRequest

Arrays = dict[str, np.ndarray]

_SMALL: Final = 32
"""Up to this many elements, checking finiteness in Python beats numpy's call overhead
(about 0.5 µs against 1.6 µs for 4 floats)."""


class Checked:
    """A request ready for the batcher: its arrays, outputs, rows and batch key."""

    __slots__ = ("inputs", "key", "outputs", "rows")

    def __init__(self, inputs: Arrays, outputs: list[str], rows: int, key: Hashable) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.rows = rows
        self.key = key


class _InputRule:
    """What one declared input must look like."""

    __slots__ = ("datatype", "first", "fixed", "name", "rank", "refuse_nan", "shape", "tail")

    def __init__(self, spec: TensorSignature) -> None:
        self.name = spec.name
        self.datatype = spec.datatype
        self.shape = spec.shape
        self.rank = len(spec.shape)
        self.first = spec.shape[0] if spec.shape else -1
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if d != -1)
        """(axis, size) pairs that must match; -1 axes match anything."""
        inner = spec.shape[1:]
        self.tail: tuple[int, ...] | None = (
            tuple(inner) if spec.shape and -1 not in inner else None
        )
        """Every axis after the first, when all are fixed: then one comparison checks them."""
        self.refuse_nan = not spec.allow_nan

    def check(self, datatype: str, data: np.ndarray) -> None:
        if datatype != self.datatype:
            raise InvalidInputError(
                f"input {self.name!r} has datatype {datatype}, the model expects {self.datatype}"
            )
        got = data.shape
        tail = self.tail
        if tail is not None:
            wrong = len(got) != self.rank or got[1:] != tail or self.first not in (-1, got[0])
        else:
            wrong = len(got) != self.rank or any(got[axis] != size for axis, size in self.fixed)
        if wrong:
            raise InvalidInputError(
                f"input {self.name!r} has shape {list(got)}, the model expects {self.shape}"
            )
        if self.refuse_nan and data.dtype.kind == "f" and data.size and not _finite(data):
            raise InvalidInputError(
                f"input {self.name!r} contains NaN or Inf, which this model refuses"
            )


class SignatureCheck:
    """Precomputed per model version so that the per-request work is a few dict lookups."""

    def __init__(self, manifest: Manifest) -> None:
        self.name = manifest.name
        self.batched = manifest.batched
        self.max_batch_size = manifest.batching.max_batch_size
        self._rules = {t.name: _InputRule(t) for t in manifest.inputs}
        self.required = [t.name for t in manifest.inputs if not t.optional]
        self.output_names = [t.name for t in manifest.outputs]
        self.output_types = {t.name: t.datatype for t in manifest.outputs}
        """Declared datatype per output, for the response (built once, not per request)."""
        self.known_outputs = frozenset(self.output_names)
        self._one_key: Hashable | None = (
            ("all inputs, fixed inner shapes",)
            if self._rules
            and not any(t.optional for t in manifest.inputs)
            and all(rule.tail is not None for rule in self._rules.values())
            else None
        )
        """The batch key every valid request has, when the signature leaves no choice (every
        input required, every axis but the batch axis fixed): then no key is built per request."""

    def check(self, request: InferRequest) -> Checked:
        arrays: Arrays = {}
        rules = self._rules
        for tensor in request.inputs:
            name = tensor.name
            if name in arrays:
                raise InvalidInputError(f"input {name!r} is given twice")
            rule = rules.get(name)
            if rule is not None:
                rule.check(tensor.datatype, tensor.data)
            elif rules:
                raise InvalidInputError(
                    f"unknown input {name!r} for model {self.name!r}; "
                    f"expected {', '.join(sorted(rules))}"
                )
            arrays[name] = tensor.data
        if len(arrays) != len(rules):  # some declared input is absent: was it required?
            for name in self.required:
                if name not in arrays:
                    raise InvalidInputError(f"missing input {name!r} for model {self.name!r}")
        outputs = self._outputs(request) if request.outputs else self.output_names
        rows = self._rows(arrays) if self.batched else 1
        key = self._one_key
        if key is None:
            key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(arrays.items()))
        return Checked(arrays, outputs, rows, key)

    def _outputs(self, request: InferRequest) -> list[str]:
        names = []
        for requested in request.outputs or ():
            if self.known_outputs and requested.name not in self.known_outputs:
                raise InvalidInputError(
                    f"unknown output {requested.name!r} for model {self.name!r}; "
                    f"expected {', '.join(self.output_names)}"
                )
            names.append(requested.name)
        return names

    def _rows(self, arrays: Arrays) -> int:
        count = -2
        for a in arrays.values():
            rows = a.shape[0] if a.ndim else -1
            if count not in (rows, -2):
                raise InvalidInputError(
                    "all inputs must have the same size along the batch dimension"
                )
            count = rows
        if count < 1:
            raise InvalidInputError("inputs need at least one row along the batch dimension")
        if count > self.max_batch_size:
            raise InvalidInputError(
                f"batch of {count} rows exceeds the model's max_batch_size of {self.max_batch_size}"
            )
        return count


def _finite(data: np.ndarray) -> bool:
    if data.size <= _SMALL:
        return all(map(math.isfinite, data.ravel().tolist()))
    return bool(np.isfinite(data).all())
