"""The gateway's errors and its one table from ErrorKind to HTTP status.

The gateway answers like the model server does (``{"error": "..."}`` bodies, the same
statuses), so a client cannot tell which of the two refused it.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

from pinnace.errors import ErrorKind, PinnaceError

STATUS: Final[dict[ErrorKind, int]] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.UPSTREAM: 502,
    ErrorKind.INTERNAL: 500,
}


class UpstreamUnreachableError(PinnaceError):
    """No try reached an upstream (connections refused or timed out): safe for the client to
    retry, hence 503 rather than 502."""

    kind = ErrorKind.UNAVAILABLE


class _ErrorBody(msgspec.Struct):
    error: str


_encode = msgspec.json.Encoder().encode


def error_body(message: str) -> bytes:
    return _encode(_ErrorBody(message))


def error_headers(exc: PinnaceError) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    if exc.retry_after is not None:
        # Retry-After takes whole seconds; round up so that a client waiting that long succeeds.
        headers.append((b"retry-after", b"%d" % max(1, math.ceil(exc.retry_after))))
    if exc.kind is ErrorKind.UNAUTHENTICATED:
        headers.append((b"www-authenticate", b'Bearer realm="pinnace"'))
    return headers
