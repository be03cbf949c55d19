"""Small ASGI helpers: capped body reading, header lookup, responses. Kept minimal because
every layer here is paid for on every request."""

from __future__ import annotations

from typing import Any

from pinnace.errors import InvalidInputError
from pinnace.protocol.json_codec import encode_json
from pinnace.server.rest.errors import error_body
from pinnace.serving import read_body as read_capped_body

Scope = dict[str, Any]
Message = dict[str, Any]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
OCTETS = b"application/octet-stream"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def read_body(scope: Scope, receive: Any, cap: int) -> bytes:
    """The whole body, refusing (413) as soon as it is known to exceed ``cap`` bytes."""
    declared = header(scope, b"content-length")
    length = integer_header(declared, "Content-Length") if declared is not None else None
    return await read_capped_body(receive, cap, length)


def integer_header(raw: bytes, name: str) -> int:
    """A header whose value must be an integer (Content-Length and the like): 400 if not."""
    try:
        return int(raw)
    except ValueError:
        raise InvalidInputError(f"{name} must be an integer") from None


async def respond(
    send: Any, status: int, body: bytes, content_type: bytes = JSON, extra: Headers | None = None
) -> None:
    start, end = response_messages(status, body, content_type, extra)
    await send(start)
    await send(end)


def response_messages(
    status: int, body: bytes, content_type: bytes = JSON, extra: Headers | None = None
) -> tuple[Message, Message]:
    """The two ASGI messages of a whole response: for handlers that send them themselves,
    saving the coroutine :func:`respond` costs on every request."""
    headers: Headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def respond_json(send: Any, status: int, value: Any, extra: Headers | None = None) -> None:
    await respond(send, status, encode_json(value), JSON, extra)


async def respond_error(send: Any, status: int, message: str, extra: Headers | None = None) -> None:
    await respond(send, status, error_body(message), JSON, extra)
