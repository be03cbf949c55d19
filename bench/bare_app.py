"""The bare-ASGI floor: a constant answer under pinnace's own uvicorn configuration.

    taskset -c 0 python bench/bare_app.py PORT

It reads the request body (as every POST handler must) and answers a fixed small JSON
document, so the gap between this and ``pinnace serve`` is exactly what pinnace adds on top of
uvicorn + uvloop + httptools.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import uvloop

from pinnace.server.app import _uvicorn
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


def main() -> None:
    port = int(sys.argv[1])
    settings = ServerSettings(repository=Path(), http_port=port)  # only the uvicorn knobs matter
    server = _uvicorn(app, "127.0.0.1", port, settings)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(server.serve())


if __name__ == "__main__":
    main()
