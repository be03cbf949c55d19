"""The V2 JSON inference request as msgspec decodes it: the structs every JSON decoder fills in.

:mod:`pinnace.protocol.json_codec` decodes short bodies into :class:`WireRequest` in one go;
:mod:`pinnace.protocol.json_long` decodes long ones into the same structs, its arrays apart.
"""

from __future__ import annotations

from typing import Any

import msgspec

from pinnace.protocol.datatypes import DATATYPES, dtype_of

JSON_DTYPES = {name: dtype_of(name) for name in DATATYPES if name not in ("BYTES", "BF16")}
"""Datatypes whose JSON data numpy converts in one call."""


class WireInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class LongWireInput(msgspec.Struct):
    """An input of a long body: its data kept as JSON text, for :func:`~pinnace.protocol.json_numbers.numbers`."""

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: msgspec.Raw = msgspec.Raw()
    """Empty when absent."""


class WireOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] | None = None


class WireRequest(msgspec.Struct):
    inputs: list[WireInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[WireOutput] | None = None


class LongWireRequest(msgspec.Struct):
    inputs: list[LongWireInput]
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[WireOutput] | None = None
