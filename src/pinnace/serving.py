"""uvicorn's httptools protocol with one system call per response instead of two; used by the
server's and the gateway's listeners.

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
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
