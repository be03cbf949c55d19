"""uvicorn's httptools protocol with one system call per response instead of two.

uvicorn writes a response's head (at ``http.response.start``) and its body (at
``http.response.body``) as two ``transport.write`` calls, and each is a ``send()`` to the
kernel. For the gateway's small answers that second system call was the largest single cost
in the profile (about a sixth of the process). This protocol hands uvicorn a transport that
keeps what is written during one event-loop step and writes it as one piece at the end of the
step (``call_soon``): the answer leaves in the same loop iteration, in one ``send()``.
Everything else is uvicorn's own protocol, selected with ``uvicorn.Config(http=...)``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """Delegates to a transport; writes within one loop step become one write."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(data)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        loop = asyncio.get_running_loop()
        super().connection_made(_CoalescingTransport(transport, loop))  # type: ignore[arg-type]
