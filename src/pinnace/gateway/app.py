"""The gateway process: a raw ASGI app (no framework), its lifespan, reloads and ``run_gateway``.

Per request: local endpoints (health, metrics) first; then authenticate, parse the V2 path,
find the route, check the key's scope and models, take the quota, read the body under its cap,
and hand over to :class:`~pinnace.gateway.proxy.Proxy`. Everything the request needs comes from
one :class:`~pinnace.gateway.state.State`, swapped whole on reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pinnace.errors import (
    InternalError,
    InvalidInputError,
    ModelNotFoundError,
    PinnaceError,
)
from pinnace.gateway import accesslog, management
from pinnace.gateway.auth import Principal
from pinnace.gateway.client import HOP_BY_HOP
from pinnace.gateway.config import GatewayConfig, GatewayConfigError, load_config
from pinnace.gateway.discovery import PoolWatcher
from pinnace.gateway.errors import STATUS, error_body, error_headers
from pinnace.gateway.metrics import GatewayMetrics
from pinnace.gateway.proxy import DEGRADED, Call, Proxy, Reply
from pinnace.gateway.quotas import QuotaState
from pinnace.gateway.state import Route, State
from pinnace.gateway.upstream import Pool
from pinnace.serving import ClientGone, read_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("pinnace.gateway")

# Model names as the manifest allows them, versions as positive integers: anything else is no
# model of ours, and nothing unchecked reaches an upstream's request line.
_MODEL_PATH: Final = re.compile(
    r"^/v2/models/([A-Za-z0-9][A-Za-z0-9_.-]{0,63})(?:/versions/([1-9][0-9]{0,9}))?(/[a-z]+)?$"
)
_MODEL_SUFFIXES: Final = frozenset({"", "/infer", "/ready", "/config", "/stats"})
# The body is already read in full, so "expect: 100-continue" must not reach the upstream (its
# interim 100 answer would be taken for the response).
_DROP_REQUEST: Final = HOP_BY_HOP | {
    b"authorization", b"x-api-key", b"x-request-id", b"expect",
}
_REQUEST_ID_MAX: Final = 128
FIRST_ROUND_TIMEOUT_S: Final = 5.0
_REJECTIONS: Final = frozenset({"unauthenticated", "permission_denied", "rate_limited"})


class Gateway:
    """The ASGI application. ``metrics`` is handed in so that tests and embedders own it."""

    def __init__(self, config_path: Path, config: GatewayConfig, metrics: GatewayMetrics) -> None:
        self.config_path = config_path
        self.metrics = metrics
        self.state = State(config, metrics)
        self.proxy = Proxy(metrics)
        self._watchers: dict[Pool, PoolWatcher] = {}
        self._reload_lock = asyncio.Lock()
        self._background: list[asyncio.Task[None]] = []
        self._file_stamp = _stamp(config_path)
        self.access_log = accesslog.AccessLog()
        metrics.watch_pools(self.state.pools.values)

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        path: str = scope["path"]
        if path.startswith("/v2/health/") or path == "/metrics":
            await self._local(path, send)
            return
        state = self.state
        req = _Request(scope)
        try:
            reply = await self._dispatch(state, req, path, receive)
        except PinnaceError as exc:
            reply = _error_reply(exc)
        except Exception:  # a bug of ours: answer 500 without details, log them
            log.exception("unexpected error handling %s", path[:100])
            reply = _error_reply(InternalError("internal gateway error"))
        finally:
            if req.acquired is not None:
                req.acquired.release()

        headers = reply.headers
        headers.append((b"content-length", b"%d" % len(reply.body)))
        headers.append((b"x-request-id", req.request_id))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})

        route_name = req.route.name if req.route is not None else "-"
        elapsed = time.perf_counter() - start
        if req.route is not None:
            self.metrics.latency(route_name).observe(elapsed)
        self.metrics.requests(route_name, reply.outcome).inc()
        if reply.outcome in _REJECTIONS:
            who = req.principal.name if req.principal is not None else "-"
            self.metrics.rejected(reply.outcome, who).inc()
        if state.config.access_log:
            _log_access(self.access_log, scope, req, reply, elapsed)

    async def _dispatch(self, state: State, req: _Request, path: str, receive: Receive) -> Reply:
        principal = req.principal = state.keys.authenticate(req.authorization, req.api_key)
        m = _MODEL_PATH.match(path)
        if m is not None and (m.group(3) or "") in _MODEL_SUFFIXES:
            model, version, suffix = m.group(1), m.group(2), m.group(3) or ""
            route = req.route = state.route_for(model)
            if route is None:
                raise ModelNotFoundError(f"no route for model {model!r}")
            principal.check_model(model)
            quota = principal.quota
            if quota is not None:
                quota.acquire(principal.name)
                req.acquired = quota
            body = req.body = await _read_body(receive, route.max_body, req.content_length)
            call = req.call(body, _sticky(route, principal, req.scope["headers"]))
            return await self.proxy.forward(route, model, version, suffix.encode(), call)
        if management.is_management(path):
            principal.check_admin()
            body = req.body = await _read_body(receive, state.max_body, req.content_length)
            return await management.handle(state, path, req.call(body, None))
        if path in {"/v2", "/v2/"}:
            principal.check_infer()
            req.route = state.default
            return await self.proxy.forward(state.default, None, None, b"/v2", req.call(b"", None))
        raise ModelNotFoundError(f"no such endpoint: {path[:100]}")

    async def _local(self, path: str, send: Send) -> None:
        if path == "/metrics":
            body = generate_latest(self.metrics.registry)
            status, ctype = 200, CONTENT_TYPE_LATEST.encode()
        elif path == "/v2/health/live":
            status, body, ctype = 200, b"", b"text/plain"
        elif path == "/v2/health/ready":
            ready = any(p.any_healthy() for p in self.state.pools.values())
            status, body, ctype = (200 if ready else 503), b"", b"text/plain"
        else:
            status, body, ctype = 404, error_body("no such endpoint"), b"application/json"
        headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # -- lifespan and reload -------------------------------------------------------------------
    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        await self._sync_watchers(self.state, None)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._background.append(asyncio.create_task(self._watch_file()))
        self._background.append(asyncio.create_task(self.access_log.run()))

    async def shutdown(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watcher in self._watchers.values():
            await watcher.stop()
        for pool in self.state.pools.values():
            pool.close()

    def _on_sighup(self) -> None:
        self._background.append(asyncio.create_task(self._reload_task("SIGHUP")))

    async def _reload_task(self, reason: str) -> None:
        await self.reload(reason)

    async def _watch_file(self) -> None:
        while True:
            await asyncio.sleep(self.state.config.reload.interval_s)
            if not self.state.config.reload.watch:
                continue
            stamp = _stamp(self.config_path)
            if stamp is not None and stamp != self._file_stamp:
                self._file_stamp = stamp
                await self.reload("file changed")

    async def reload(self, reason: str) -> bool:
        """Load the config file again and swap it in; on any error keep the running config."""
        async with self._reload_lock:
            self._file_stamp = _stamp(self.config_path)
            try:
                config = await asyncio.to_thread(load_config, self.config_path)
                new = State(config, self.metrics, previous=self.state)
            except GatewayConfigError as exc:
                log.error("config reload (%s) refused, keeping the running config: %s",
                          reason, exc.message)
                self.metrics.reloads("refused").inc()
                return False
            old, self.state = self.state, new
            await self._sync_watchers(new, old)
            self.metrics.reloads("ok").inc()
            log.info("config reloaded (%s)", reason)
            return True

    async def _sync_watchers(self, new: State, old: State | None) -> None:
        starting = []
        for pool in new.pools.values():
            if pool not in self._watchers:
                watcher = self._watchers[pool] = PoolWatcher(pool)
                starting.append(watcher.start(FIRST_ROUND_TIMEOUT_S))
        await asyncio.gather(*starting)
        if old is not None:
            for pool in new.retired_pools(old):
                old_watcher = self._watchers.pop(pool, None)
                if old_watcher is not None:
                    await old_watcher.stop()
                pool.close()  # busy connections close when their exchange ends


class _Request:
    """One request's headers, split once into what the gateway reads and what it forwards."""

    __slots__ = (
        "acquired", "api_key", "authorization", "body", "content_length", "forwarded",
        "principal", "request_id", "route", "scope",
    )

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.authorization: bytes | None = None
        self.api_key: bytes | None = None
        self.content_length = 0
        self.principal: Principal | None = None
        self.route: Route | None = None
        self.acquired: QuotaState | None = None
        self.body = b""
        request_id: bytes | None = None
        forwarded: list[tuple[bytes, bytes]] = []
        for name, value in scope["headers"]:
            if name in _DROP_REQUEST:
                if name == b"authorization":
                    self.authorization = value
                elif name == b"x-api-key":
                    self.api_key = value
                elif name == b"x-request-id":
                    request_id = value
                elif name == b"content-length" and value.isdigit():
                    self.content_length = int(value)
            else:
                forwarded.append((name, value))
        if request_id is None or len(request_id) > _REQUEST_ID_MAX or not request_id.isascii():
            request_id = _new_request_id()
        forwarded.append((b"x-request-id", request_id))
        self.request_id = request_id
        self.forwarded = forwarded

    def call(self, body: bytes, sticky: bytes | None) -> Call:
        scope = self.scope
        # HEAD goes upstream as GET: uvicorn drops the body on the way back, and the client's
        # parser never has to guess that a HEAD answer's content-length carries no body.
        method = b"GET" if scope["method"] == "HEAD" else scope["method"].encode()
        return Call(method, self.forwarded, body, scope["query_string"], sticky)


def _log_access(
    log: accesslog.AccessLog, scope: Scope, req: _Request, reply: Reply, elapsed: float
) -> None:
    client = scope.get("client")
    log.write(accesslog.AccessEntry(
        ts=accesslog.now(), request_id=req.request_id.decode(), method=scope["method"],
        path=scope["path"][:256], status=reply.status, duration_ms=round(elapsed * 1000, 3),
        outcome=reply.outcome, route=req.route.name if req.route is not None else "",
        key=req.principal.name if req.principal is not None else "",
        upstream=reply.upstream, degraded=_degraded(reply), bytes_in=len(req.body),
        bytes_out=len(reply.body), client=client[0] if client else "",
    ))


_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def _new_request_id() -> bytes:
    # A random per-process prefix and a counter: unique like a uuid4 at a fifth of the cost.
    return b"%s%016x" % (_ID_PREFIX.encode(), next(_id_counter))


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _sticky(route: Route, principal: Principal, headers: list[tuple[bytes, bytes]]) -> bytes | None:
    canary = route.canary
    if canary is None:
        return None
    if canary.sticky_key:
        return principal.name.encode()
    if canary.header is not None:
        for name, value in headers:
            if name == canary.header:
                return value
    return None


async def _read_body(receive: Receive, limit: int, content_length: int) -> bytes:
    try:
        return await read_body(receive, limit, content_length)
    except ClientGone:
        raise InvalidInputError("client went away before sending its body") from None


def _error_reply(exc: PinnaceError) -> Reply:
    return Reply(STATUS[exc.kind], error_headers(exc), error_body(exc.message), exc.kind.value)


def _degraded(reply: Reply) -> str:
    for name, value in reply.headers:
        if name == DEGRADED:
            return value.decode()
    return ""


def build_app(config_path: Path, registry: CollectorRegistry | None = None) -> Gateway:
    """Load the config (raising GatewayConfigError) and build the app on ``registry``."""
    config = load_config(config_path)
    return Gateway(config_path, config, GatewayMetrics(registry or CollectorRegistry()))


def run_gateway(config_path: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the gateway until SIGINT/SIGTERM. Raises GatewayConfigError for a bad config.

    SIGHUP, or a change of the file, reloads it. Logging is the caller's to configure.
    """
    import uvicorn

    from pinnace.serving import CoalescingHttpToolsProtocol

    app = build_app(config_path)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=CoalescingHttpToolsProtocol,
        lifespan="on",
        access_log=False,
        server_header=False,  # the upstream's own server header passes through
        timeout_keep_alive=75,
        timeout_graceful_shutdown=10,
        backlog=4096,
        proxy_headers=False,  # we are the proxy; X-Forwarded-* from clients mean nothing here
        log_config=None,
    )
    log.info("pinnace gateway (pid %d) on %s:%d, config %s", os.getpid(), host, port,
             config_path)
    uvicorn.Server(config).run()
