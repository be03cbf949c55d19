"""Protocol data as pinnace holds it between the edges: decoded tensors, never wire formats.

Transports decode into these types and encode from them; the data plane sees nothing else.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

Parameters = dict[str, Any]
"""V2 ``parameters``: string keys, values of bool, int, float or str."""


class Tensor(msgspec.Struct, gc=False):
    """A named tensor. ``data`` is a numpy array whose shape is the tensor's shape.

    ``datatype`` is the V2 name; it is kept beside the array because ``BF16`` and ``BYTES``
    are not recoverable from the numpy dtype alone.
    """

    name: str
    datatype: str
    data: np.ndarray
    parameters: Parameters | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)


class RequestedOutput(msgspec.Struct, gc=False):
    """An output the client asked for, with its parameters (e.g. ``binary_data``)."""

    name: str
    parameters: Parameters | None = None


class InferRequest(msgspec.Struct):
    """A decoded inference request."""

    inputs: list[Tensor]
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[RequestedOutput] | None = None


class InferResponse(msgspec.Struct):
    """The result of one inference request."""

    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters | None = None


class TensorSpec(msgspec.Struct, frozen=True):
    """One input or output of a model's signature. ``-1`` marks a variable dimension."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(msgspec.Struct):
    """``GET /v2/models/{name}[/versions/{v}]``."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameters: Parameters | None = None


class ServerMetadata(msgspec.Struct):
    """``GET /v2``."""

    name: str
    version: str
    extensions: list[str]


class RepositoryEntry(msgspec.Struct, omit_defaults=True):
    """One row of the repository index (``POST /v2/repository/index``)."""

    name: str
    version: str = ""
    state: str = ""
    reason: str = ""
