"""The one table from :class:`ErrorKind` to gRPC status codes, consistent with REST's.

REST's 413 and 429 both become RESOURCE_EXHAUSTED; its 502 and 503 both become UNAVAILABLE
(the codes gRPC clients retry on). A ``retry_after`` hint travels as trailing metadata
``retry-after`` in whole seconds, as REST sends the header.
"""

from __future__ import annotations

import math
from typing import Final

import grpc

from pinnace.errors import ErrorKind, PinnaceError

GRPC_STATUS: Final[dict[ErrorKind, grpc.StatusCode]] = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorKind.UPSTREAM: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def code_of(error: PinnaceError) -> grpc.StatusCode:
    return GRPC_STATUS[error.kind]


def retry_after_metadata(error: PinnaceError) -> tuple[tuple[str, str], ...]:
    if error.retry_after is None:
        return ()
    return (("retry-after", str(max(1, math.ceil(error.retry_after)))),)
