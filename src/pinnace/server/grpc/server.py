"""The gRPC listeners of ``pinnace serve``: data (inference RPCs) and management (repository RPCs).

Both are ``grpc.aio`` servers on the event loop that also runs the REST listeners, so a
request over gRPC and one over REST reach the same data plane and batch together. Each is
optional: a ``None`` port turns it off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import grpc
from grpc import aio

from pinnace.core.dataplane import DataPlane
from pinnace.errors import InternalError
from pinnace.observability.hooks import RequestListener
from pinnace.server.grpc import convert
from pinnace.server.grpc.servicer import (
    DATA_RPCS,
    REPOSITORY_RPCS,
    InferenceServicer,
    Method,
    RepositoryServicer,
    SpanFactory,
    bearer_check,
    guarded,
)
from pinnace.settings import ServerSettings

log = logging.getLogger(__name__)


class GrpcListener:
    """The data and management gRPC servers of one process, started and stopped together.

    ``tracing`` (``Observability.tracing``), when given, puts every call in a SERVER span.
    """

    def __init__(
        self,
        dataplane: DataPlane,
        settings: ServerSettings,
        *,
        token: str,
        listener: RequestListener | None,
        tracing: SpanFactory | None = None,
    ) -> None:
        self._dataplane = dataplane
        self._tracing = tracing
        self._settings = settings
        self._token = token
        self._listener = listener
        self._servers: list[aio.Server] = []

    async def start(self) -> None:
        """Bind and start each configured server; raises if a port cannot be bound."""
        s = self._settings
        data = InferenceServicer(self._dataplane, max_elements=s.max_elements)
        if s.grpc_port is not None:
            methods = {name: getattr(data, name) for name in DATA_RPCS}
            methods.update((name, data.elsewhere) for name in REPOSITORY_RPCS)
            await self._serve(s.host, s.grpc_port, self._handlers(methods, authorize=None))
        if s.grpc_management_port is not None:
            repository = RepositoryServicer(self._dataplane)
            methods = {name: getattr(repository, name) for name in REPOSITORY_RPCS}
            handlers = self._handlers(methods, authorize=bearer_check(self._token))
            # Liveness without a token, as REST's management /v2/health, for probes.
            handlers.update(self._handlers({"ServerLive": data.ServerLive}, authorize=None))
            await self._serve(s.management_host, s.grpc_management_port, handlers)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls at once; in-flight calls get ``grace_s`` seconds to finish."""
        await asyncio.gather(*(server.stop(grace_s) for server in self._servers))
        self._servers.clear()

    def _handlers(self, methods: dict[str, Method], *, authorize: Any) -> dict[str, Any]:
        handlers: dict[str, Any] = {}
        for name, method in methods.items():
            parse, serialize = convert.RPC_TYPES[name]
            wrapped = guarded(name, method, listener=self._listener, authorize=authorize, tracing=self._tracing)
            handlers[name] = grpc.unary_unary_rpc_method_handler(
                wrapped, request_deserializer=parse, response_serializer=serialize
            )
        return handlers

    async def _serve(self, host: str, port: int, handlers: dict[str, Any]) -> None:
        server = aio.server(options=_options(self._settings))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(convert.SERVICE, handlers),))
        # Registered handlers skip the per-call lookup through the generic handler (grpcio>=1.63).
        if hasattr(server, "add_registered_method_handlers"):
            server.add_registered_method_handlers(convert.SERVICE, handlers)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            server.add_insecure_port(address)
        except RuntimeError as exc:
            raise InternalError(f"cannot listen for gRPC on {address}") from exc
        await server.start()
        self._servers.append(server)
        log.info("gRPC listening", extra={"address": address})


def _options(settings: ServerSettings) -> Iterable[tuple[str, Any]]:
    limit = settings.grpc_max_message_bytes
    return [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # gRPC sets SO_REUSEPORT by default, which would let a second server silently share a
        # busy port; allow it only when worker processes are meant to share one.
        ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
    ]
