"""The one table from :class:`ErrorKind` to HTTP status, and error bodies."""

from __future__ import annotations

import math
from typing import Final

from pinnace.errors import ErrorKind, PinnaceError
from pinnace.protocol.json_codec import encode_json

HTTP_STATUS: Final[dict[ErrorKind, int]] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.FAILED_PRECONDITION: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.INTERNAL: 500,
    ErrorKind.UPSTREAM: 502,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
}


def status_of(error: PinnaceError) -> int:
    return HTTP_STATUS[error.kind]


def retry_after_header(error: PinnaceError) -> list[tuple[bytes, bytes]]:
    if error.retry_after is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(error.retry_after))).encode())]


def error_body(message: str) -> bytes:
    """``{"error": message}``, the body of every error answer."""
    return encode_json({"error": message})
