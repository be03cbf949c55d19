"""The bare floors: a constant answer under pinnace's own uvicorn configuration.

    taskset -c 0 python bench/bare_app.py PORT [--no-asgi]

It reads the request body (as every POST handler must) and answers a fixed small JSON
document, so the gap between this and ``pinnace serve`` is what pinnace adds on top of
uvicorn + uvloop + httptools. By default the answer comes from a bare ASGI app (the floor the
targets are set against). With ``--no-asgi`` it comes from the HTTP protocol's own parser
callbacks, as pinnace's inference requests do: the floor of the HTTP server alone.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import uvloop

from pinnace.server.app import _uvicorn
from pinnace.serving import CoalescingHttpToolsProtocol
from pinnace.settings import ServerSettings

_BODY = b'{"ok":true}'
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
}
_END = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    message = await receive()
    while message.get("more_body", False):
        message = await receive()
    await send(_START)
    await send(_END)


_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(_BODY)


class ConstantProtocol(CoalescingHttpToolsProtocol):
    """Answers every request with the constant as its body arrives: no ASGI scope, cycle or
    task; the parser's callbacks, one write and the keep-alive bookkeeping."""

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_headers_complete(self) -> None:
        pass

    def on_body(self, body: bytes) -> None:
        pass

    def on_message_complete(self) -> None:
        self.coalescing.write_whole(_HEAD, _BODY)
        self.on_response_complete()


def main() -> None:
    port = int(sys.argv[1])
    settings = ServerSettings(repository=Path(), http_port=port)  # only the uvicorn knobs matter
    protocol = ConstantProtocol if "--no-asgi" in sys.argv[2:] else CoalescingHttpToolsProtocol
    server = _uvicorn(app, "127.0.0.1", port, settings, protocol)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve())


if __name__ == "__main__":
    main()
