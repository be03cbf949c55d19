"""The RPCs of ``inference.GRPCInferenceService``: decode, call the data plane, encode.

:class:`InferenceServicer` answers on the data listener, :class:`RepositoryServicer` on the
management listener. Each method is thin; :func:`guarded` wraps every one of them once with
what all RPCs share: the error table, the management token check and the request listener.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeAlias

import grpc
from grpc import aio

from pinnace.core.dataplane import DataPlane
from pinnace.errors import ModelNotFoundError, PinnaceError, UnauthenticatedError
from pinnace.observability.hooks import RequestListener
from pinnace.server.grpc import convert
from pinnace.server.grpc.errors import code_of, retry_after_metadata

log = logging.getLogger(__name__)

Context: TypeAlias = Any
"""``grpc.aio.ServicerContext``; grpcio ships no type hints."""
Method = Callable[[Any, Context], Awaitable[Any]]

DATA_RPCS = (
    "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
    "ModelInfer", "ModelConfig", "ModelStatistics",
)  # fmt: skip
REPOSITORY_RPCS = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")


class InferenceServicer:
    """Health, metadata, inference and statistics RPCs (the data listener)."""

    def __init__(self, dataplane: DataPlane, *, max_elements: int) -> None:
        self._dp = dataplane
        self._max_elements = max_elements

    async def ServerLive(self, request: Any, context: Context) -> Any:
        return convert.live_response(self._dp.live())

    async def ServerReady(self, request: Any, context: Context) -> Any:
        return convert.ready_response(self._dp.ready())

    async def ModelReady(self, request: Any, context: Context) -> Any:
        # An unknown model or version is simply not ready: readiness probes want a boolean
        # (REST's 404 reads as "not ready" to clients too).
        try:
            ready = self._dp.model_ready(*convert.model_ref(request))
        except ModelNotFoundError:
            ready = False
        return convert.model_ready_response(ready)

    async def ServerMetadata(self, request: Any, context: Context) -> Any:
        return convert.server_metadata_response(self._dp.server_metadata())

    async def ModelMetadata(self, request: Any, context: Context) -> Any:
        return convert.model_metadata_response(self._dp.model_metadata(*convert.model_ref(request)))

    async def ModelInfer(self, request: Any, context: Context) -> Any:
        name, version = convert.model_label(request)
        decoded = convert.decode_infer_request(
            request, max_elements=self._max_elements, time_remaining=context.time_remaining()
        )
        response = await self._dp.infer(name, version or None, decoded)
        return convert.encode_infer_response(response, decoded)

    async def ModelConfig(self, request: Any, context: Context) -> Any:
        served = self._dp.repository.get(*convert.model_ref(request))
        return convert.model_config_response(served.manifest, served.runtime.platform)

    async def ModelStatistics(self, request: Any, context: Context) -> Any:
        name, version = convert.model_ref(request)
        return convert.model_statistics_response(self._dp.model_stats(name or None, version))

    async def elsewhere(self, request: Any, context: Context) -> Any:
        """The repository RPCs, called on the data listener: say where they live (as REST)."""
        raise ModelNotFoundError("the repository API is served on the management listener")


class RepositoryServicer:
    """The repository extension (the management listener); every call needs the token."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane

    async def RepositoryIndex(self, request: Any, context: Context) -> Any:
        rows = self._dp.repository_index()
        if convert.index_ready_only(request):
            rows = [r for r in rows if r.state == "READY"]
        return convert.repository_index_response(rows)

    async def RepositoryModelLoad(self, request: Any, context: Context) -> Any:
        await self._dp.load_model(convert.load_model_name(request))
        return convert.load_response()

    async def RepositoryModelUnload(self, request: Any, context: Context) -> Any:
        await self._dp.unload_model(convert.unload_model_name(request))
        return convert.unload_response()


def bearer_check(token: str) -> Callable[[Context], None]:
    """Raises UnauthenticatedError unless the call carries ``authorization: Bearer <token>``."""
    expected = f"Bearer {token}".encode()

    def check(context: Context) -> None:
        metadata = context.invocation_metadata() or ()
        given = next((v for k, v in metadata if k == "authorization"), None)
        if given is None:
            raise UnauthenticatedError("the management API needs metadata 'authorization: Bearer <token>'")
        raw = given if isinstance(given, bytes) else str(given).encode()
        if not hmac.compare_digest(raw, expected):
            raise UnauthenticatedError("wrong management token")

    return check


class SpanFactory(Protocol):
    """What tracing offers a gRPC transport (``pinnace.observability.tracing.Tracing``)."""

    def server_span(self, name: str, carrier: MutableMapping[str, str]) -> AbstractContextManager[Any]: ...


def guarded(
    rpc: str,
    method: Method,
    *,
    listener: RequestListener | None,
    authorize: Callable[[Context], None] | None = None,
    tracing: SpanFactory | None = None,
) -> Method:
    """``method`` with errors mapped through the one table and each call reported once; inside
    a SERVER span, child of the call's ``traceparent`` metadata, when tracing is on."""

    async def handle(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if authorize is not None:
                authorize(context)
            return await method(request, context)
        except PinnaceError as exc:
            code = code_of(exc)
            await context.abort(code, exc.message, retry_after_metadata(exc))
        except asyncio.CancelledError:
            # The client went away or its deadline passed; gRPC has already told it.
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except aio.AbortError:
            raise
        except Exception:
            log.exception("unhandled error in gRPC %s", rpc)
            code = grpc.StatusCode.INTERNAL
            await context.abort(code, "internal server error")
        finally:
            if listener is not None:
                model, version = convert.model_label(request)
                listener.request_finished(
                    "grpc", rpc, model, version, code.value[0], time.perf_counter() - started, None
                )

    if tracing is None:
        return handle

    async def traced(request: Any, context: Context) -> Any:
        carrier = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        with tracing.server_span(rpc, carrier):
            return await handle(request, context)

    return traced
