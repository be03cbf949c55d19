"""Wiring and lifecycle of ``pinnace serve``: one event loop hosting every listener.

Start: listeners open at once (liveness is true while models load); readiness turns true once
every model is loaded and warmed up. SIGTERM or SIGINT: readiness fails at once, the listeners
keep serving for ``shutdown_delay_s`` (so load balancers notice), then stop accepting;
in-flight requests get ``graceful_timeout_s`` to finish, models are unloaded, the log writers
flush, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import secrets
import signal
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from pinnace.core.dataplane import DataPlane, scheduler_factory
from pinnace.observability.setup import Observability, build_observability
from pinnace.repository import ModelRepository
from pinnace.server.rest.app import RestApp
from pinnace.server.rest.direct import DirectInferenceProtocol
from pinnace.server.rest.management import ManagementApp
from pinnace.serving import CoalescingHttpToolsProtocol
from pinnace.settings import ServerSettings

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to us, so several can share a loop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn(
    app: Any,
    host: str,
    port: int,
    settings: ServerSettings,
    protocol: type[asyncio.Protocol] = CoalescingHttpToolsProtocol,
) -> _Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http=protocol,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=math.ceil(settings.graceful_timeout_s),
        backlog=4096,
        # No X-Forwarded-* rewriting: it wraps every request in one more middleware, and
        # nothing here uses the client address for decisions.
        proxy_headers=False,
        # Each ASGI task in a context of its own: a request pipelined behind another is started
        # from inside the first one's answer, and would otherwise inherit its request record.
        reset_contextvars=True,
    )
    return _Server(config)


def build_dataplane(settings: ServerSettings, obs: Observability) -> DataPlane:
    repository = ModelRepository(
        settings.repository,
        scheduler_factory(obs.observer),
        drain_grace_s=settings.graceful_timeout_s,
        on_load=obs.on_load,
    )
    return DataPlane(
        repository,
        strict_readiness=settings.strict_readiness,
        observer=obs.observer,
        payloads=obs.payloads,
    )


async def serve(settings: ServerSettings, *, data_socket: socket.socket | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; returns after a graceful shutdown."""
    obs = build_observability(settings)
    dataplane = build_dataplane(settings, obs)
    obs.bind(dataplane)
    token = settings.management_token or _new_token()
    rest = RestApp(
        dataplane,
        max_body_bytes=settings.max_body_bytes,
        max_elements=settings.max_elements,
        metrics=obs.metrics,
        listener=obs.listener,
        sagemaker=settings.sagemaker,
    )
    servers: list[tuple[_Server, list[socket.socket] | None]] = [
        (
            _uvicorn(obs.wrap(rest), settings.host, settings.http_port, settings, DirectInferenceProtocol),
            [data_socket] if data_socket else None,
        )
    ]
    if settings.management_port is not None:
        management = ManagementApp(dataplane, token)
        servers.append(
            (_uvicorn(management, settings.management_host, settings.management_port, settings), None)
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    grpc = None
    if settings.grpc_port is not None:
        from pinnace.server.grpc.server import GrpcListener

        grpc = GrpcListener(
            dataplane, settings, token=token, listener=obs.listener, tracing=obs.tracing
        )
        await grpc.start()
    loading = asyncio.create_task(dataplane.repository.load_all())
    loading.add_done_callback(_settle_garbage_collector)
    tasks = [asyncio.create_task(server.serve(socks)) for server, socks in servers]
    stopped = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopped, *tasks], return_when=asyncio.FIRST_COMPLETED)
    # Readiness fails first, so that load balancers stop sending before the listeners close.
    dataplane.shutting_down = True
    if settings.shutdown_delay_s > 0 and stopped in done:
        log.info("shutting down: readiness fails now; serving %.1fs more", settings.shutdown_delay_s)
        await asyncio.sleep(settings.shutdown_delay_s)
    log.info("shutting down: draining in-flight requests")
    for server, _ in servers:
        server.should_exit = True
    stopping = [*tasks]
    if grpc is not None:
        stopping.append(asyncio.create_task(grpc.stop(settings.graceful_timeout_s)))
    await asyncio.gather(*stopping, return_exceptions=True)
    loading.cancel()
    await dataplane.repository.unload_all()
    stopped.cancel()
    obs.close()
    for task in tasks:
        if task in done and task.exception() is not None:
            raise RuntimeError("a listener failed to start") from task.exception()
    log.info("stopped")


def _settle_garbage_collector(_: object) -> None:
    """Once models are loaded, move everything alive into the permanent generation and make
    young collections rare.

    Requests allocate many short-lived objects that reference counting frees at once; with the
    default threshold (700) the collector still ran a young collection every few requests and
    walked the models' large object graphs when it promoted, costing ~8% of CPU per request and
    tens of milliseconds at p99.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


def _new_token() -> str:
    token = secrets.token_urlsafe(24)
    log.warning(
        "no management token configured; generated one for this run", extra={"management_token": token}
    )
    return token
