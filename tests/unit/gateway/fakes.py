"""In-process fakes for the gateway's unit tests: small ASGI upstreams served by uvicorn on
free loopback ports, and the gateway itself served the same way, all in one event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from pinnace.gateway.app import Gateway, build_app
from tests.servers import free_port


class FakeUpstream:
    """A V2-ish upstream: health, per-model readiness, and an infer that echoes what it got.

    ``status``, ``delay`` and ``ready_models`` can be changed while it runs.
    """

    def __init__(self, name: str, models: tuple[str, ...] = ("m",), status: int = 200,
                 delay: float = 0.0) -> None:
        self.name = name
        self.ready_models = set(models)
        self.status = status
        self.delay = delay
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.requests: list[dict[str, Any]] = []
        self.clients: set[int] = set()
        self.healthy = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status, payload, extra = 200, b"", []
        if path == "/v2/health/ready":
            status = 200 if self.healthy else 503
        elif path.endswith("/ready"):
            model = path.split("/")[3]
            status = 200 if model in self.ready_models else 400
        elif path.endswith("/infer"):
            self.requests.append({"path": path, "headers": headers, "body": body})
            self.clients.add(scope["client"][1])
            if self.delay:
                await asyncio.sleep(self.delay)
            status = self.status
            if "inference-header-content-length" in headers:
                payload = body  # binary extension: echo the exact bytes back
                extra = [(b"inference-header-content-length",
                          headers["inference-header-content-length"].encode())]
            else:
                payload = json.dumps({"model_name": path.split("/")[3], "upstream": self.name,
                                      "outputs": []}).encode()
        else:
            status = 404
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"%d" % len(payload)), *extra]})
        await send({"type": "http.response.body", "body": payload})


async def _serve(app: Any, port: int, lifespan: str) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan,
                            log_config=None, access_log=False, loop="none")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    raise TimeoutError("uvicorn did not start")


async def _stop(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def serving(
    config_yaml: str, tmp_path: Path, *upstreams: FakeUpstream
) -> AsyncIterator[tuple[str, Gateway]]:
    """Start the fake upstreams and a gateway on ``config_yaml`` (``{A}``, ``{B}``… replaced
    by the upstreams' addresses); yields the gateway's URL and app."""
    servers = [await _serve(u, u.port, "off") for u in upstreams]
    for i, u in enumerate(upstreams):
        config_yaml = config_yaml.replace("{" + "ABCDEFGH"[i] + "}", u.address)
    path = tmp_path / "gateway.yaml"
    path.write_text(config_yaml)
    app = build_app(path, CollectorRegistry())
    port = free_port()
    gateway = await _serve(app, port, "on")
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await _stop(*gateway)
        for s in servers:
            await _stop(*s)
