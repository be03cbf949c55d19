"""HTTP serving pieces the server's and the gateway's listeners share: capped body reading,
and uvicorn's httptools protocol with one system call per response instead of two.

uvicorn writes a response's head (at ``http.response.start``) and its body (at
``http.response.body``) as two ``transport.write`` calls, and each is a ``send()`` to the
kernel. For small answers that second system call was the largest single cost in the profile
(about a sixth of the process, for the server and the gateway alike). This protocol hands
uvicorn a transport that holds the head back and sends it together with the body's first
write, at once. A head with no body write after it (an empty body) goes out at the end of the
loop step (``call_soon``), so nothing waits longer than the current step.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pinnace.errors import InvalidInputError, PayloadTooLargeError

BODY_TIMEOUT_S: Final = 30.0
"""How long a body sent in several pieces may take to arrive in full."""


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


async def read_body(receive: Any, cap: int, declared: int | None = None) -> bytes:
    """The whole ASGI request body, refused (413) as soon as it is known to exceed ``cap``.

    ``declared`` is the Content-Length, checked before anything is read. A body that arrives in
    one piece (the common case) returns without any timer; a body in several pieces must
    arrive within ``BODY_TIMEOUT_S``, so a client trickling bytes cannot hold a request forever.
    """
    refuse_declared(declared, cap)
    message = await receive()
    body = whole_body(message, cap)
    return body if body is not None else await rest_of_body(receive, message, cap)


def refuse_declared(declared: int | None, cap: int) -> None:
    """413 for a Content-Length over ``cap``, before anything is read."""
    if declared is not None and declared > cap:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds the limit of {cap}")


def whole_body(message: dict[str, Any], cap: int) -> bytes | None:
    """The body of a request's first ASGI message when that message holds all of it; None when
    more follows (then :func:`rest_of_body` reads the rest).

    :func:`read_body` in two steps, for a handler that receives the first message itself: the
    data listener's inference route saves a coroutine per request that way.
    """
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        return None
    if len(body) > cap:
        raise PayloadTooLargeError(f"body exceeds the limit of {cap} bytes")
    return body


async def rest_of_body(receive: Any, first: dict[str, Any], cap: int) -> bytes:
    """The whole body of a request whose first message (``first``) said more follows; it must
    arrive within ``BODY_TIMEOUT_S``."""
    chunks = [first.get("body", b"")]
    size = len(chunks[0])
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > cap:
                    # Chunked bodies announce no length: stop as soon as the cap is crossed.
                    raise PayloadTooLargeError(f"body exceeds the limit of {cap} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise InvalidInputError(f"request body not received within {BODY_TIMEOUT_S:g}s") from None


_JOIN_BELOW = 64 * 1024
"""Bodies smaller than this are joined to the head; larger ones go out beside it."""


class _CoalescingTransport:
    """Delegates to a transport; a write joins the one held back before it."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = data
            self._loop.call_soon(self._flush)
        else:
            # Flushing on the second write, not at the end of the step, keeps a lone request's
            # latency where it was (the end-of-step flush cost ~40 µs at one connection).
            pending, self._pending = self._pending, None
            if len(data) < _JOIN_BELOW:
                self._transport.write(pending + data)
            else:
                # A large body is not copied to be joined: writelines sends both buffers in one
                # vectored write.
                self._transport.writelines((pending, data))

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not self._transport.is_closing():
            self._transport.write(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        super().connection_made(_CoalescingTransport(transport, loop))  # type: ignore[arg-type]
