"""Forwarding: deadline, tries, retries, breaker overflow, fallback and shadow, for one request.

:meth:`Proxy.forward` is the gateway's hot path after auth and quota. Outcomes::

    upstream answered           → its answer, whatever the status (5xx are retried only on
                                  idempotent routes, and count against the upstream)
    no upstream / unreachable   → fallback "down", else 503
    every candidate at its cap  → fallback "breaker", else 503 (not the upstream's fault)
    route deadline passed       → fallback "deadline", else 504
    sent, then reset            → fallback "down", else 502
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from pinnace.errors import DeadlineExceededError, PinnaceError, UpstreamError
from pinnace.gateway.client import (
    HOP_BY_HOP,
    ConnectTimeout,
    Headers,
    Response,
    TryTimeout,
    UpstreamFailure,
)
from pinnace.gateway.errors import UpstreamUnreachableError
from pinnace.gateway.metrics import GatewayMetrics
from pinnace.gateway.resilience import backoff
from pinnace.gateway.state import Route
from pinnace.gateway.traffic import Sender, Target
from pinnace.gateway.upstream import BreakerOpenError, NoUpstreamError, Pool, Upstream

DEGRADED: Final = b"pinnace-degraded"
_DROP_RESPONSE: Final = HOP_BY_HOP | {b"date", b"x-request-id"}
_STATUS_CLASS: Final = {n: f"{n}xx" for n in range(10)}


class Call:
    """What is forwarded: method, forwardable headers, the buffered body."""

    __slots__ = ("body", "headers", "method", "query", "sticky")

    def __init__(
        self, method: bytes, headers: Headers, body: bytes, query: bytes, sticky: bytes | None
    ) -> None:
        self.method = method
        self.headers = headers
        self.body = body
        self.query = query
        self.sticky = sticky


class Reply:
    """What the gateway answers; ``outcome`` and ``upstream`` are for metrics and the log."""

    __slots__ = ("body", "headers", "outcome", "status", "upstream")

    def __init__(
        self, status: int, headers: Headers, body: bytes, outcome: str, upstream: str = ""
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.outcome = outcome
        self.upstream = upstream


def reply_from(resp: Response, upstream: str, outcome: str = "") -> Reply:
    headers = [(k, v) for k, v in resp.headers if k not in _DROP_RESPONSE]
    return Reply(resp.status, headers, resp.body, outcome or _outcome(resp.status), upstream)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "upstream_error"


class _Sent:
    """A response and the upstream that gave it."""

    __slots__ = ("address", "response")

    def __init__(self, response: Response, address: str) -> None:
        self.response = response
        self.address = address


class Proxy:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    async def forward(
        self, route: Route, model: str | None, version: str | None, suffix: bytes, call: Call
    ) -> Reply:
        """Send a request for ``model`` (``None``: a server-level request) along ``route``."""
        target: Target | None = None
        if model is None:
            path, key = suffix, None
        elif route.canary is not None and version is None and suffix == b"/infer":
            target = route.canary.choose(call.sticky)
            path, key = target.prefix + suffix, target.key
        else:
            path = b"/v2/models/" + model.encode()
            if version is not None:
                path += b"/versions/" + version.encode()
            path, key = path + suffix, (model, version)
        if call.query:
            path += b"?" + call.query
        pool = target.pool if target is not None else route.pool

        mirror = None
        if route.shadow is not None and suffix == b"/infer":
            mirror = route.shadow.start(self._shadow_sender(call), suffix)
        t0 = time.perf_counter()
        sent: _Sent | None = None
        try:
            deadline = time.monotonic() + route.deadline
            sent = await self._tries(route, pool, key, path, call, deadline)
            return reply_from(sent.response, sent.address)
        except NoUpstreamError as exc:
            return await self._degrade(route, exc, "down", suffix, call)
        except BreakerOpenError as exc:
            return await self._degrade(route, exc, "breaker", suffix, call)
        except DeadlineExceededError as exc:
            return await self._degrade(route, exc, "deadline", suffix, call)
        except (UpstreamError, UpstreamUnreachableError) as exc:
            return await self._degrade(route, exc, "down", suffix, call)
        finally:
            if mirror is not None and not mirror.done():
                mirror.set_result(
                    (sent.response, time.perf_counter() - t0) if sent is not None else None
                )

    async def _tries(
        self,
        route: Route,
        pool: Pool,
        key: tuple[str, str | None] | None,
        path: bytes,
        call: Call,
        deadline: float,
    ) -> _Sent:
        if pool.is_unknown(key):
            assert key is not None
            await pool.learn(key)
        policy = route.retry
        idempotent = route.idempotent or call.method in (b"GET", b"HEAD")
        route.budget.record_request()
        tried: tuple[Upstream, ...] = ()
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _deadline_passed(route)
            up = self._pick(route, pool, key, tried)
            per_try = policy.per_try_timeout_s
            timeout = per_try if per_try is not None and per_try < remaining else remaining
            last, reason = await self._try(pool, up, path, call, timeout)
            attempt += 1
            # A try cut short by the deadline's own remainder has used up the deadline. Asked
            # of the clock instead, the answer can be "not yet": uvloop's timers run on a
            # millisecond clock cached per loop turn and fire up to 1 ms early.
            out_of_time = timeout == remaining and (
                isinstance(last, TryTimeout)
                or (isinstance(last, ConnectTimeout) and last.whole_try)
            )
            if isinstance(last, _Sent):
                if not (idempotent and last.response.status in policy.on_status):
                    return last
            elif out_of_time or (last.sent and not idempotent):
                break
            if attempt >= policy.attempts or time.monotonic() >= deadline:
                break
            delay = backoff(attempt - 1, policy.backoff_base_s, policy.backoff_max_s)
            remaining = deadline - time.monotonic()
            if delay >= remaining:
                # No time for another try after the backoff: wait out the deadline and say so
                # (the clock read after an early timer would allow one more, doomed, try).
                await asyncio.sleep(max(remaining, 0.0))
                raise _deadline_passed(route)
            if not route.budget.try_spend():
                self.metrics.budget_exhausted(route.name).inc()
                break
            self.metrics.retries(route.name, reason).inc()
            tried += (up,)
            if delay > 0:
                await asyncio.sleep(delay)
        if isinstance(last, _Sent):
            return last
        if out_of_time or (isinstance(last, TryTimeout) and time.monotonic() >= deadline):
            raise _deadline_passed(route)
        if not last.sent:
            raise UpstreamUnreachableError(f"pool {pool.name!r}: no upstream could be reached")
        raise UpstreamError(f"pool {pool.name!r}: upstream failed: {last}")

    @staticmethod
    def _pick(
        route: Route, pool: Pool, key: tuple[str, str | None] | None, tried: tuple[Upstream, ...]
    ) -> Upstream:
        try:
            return pool.pick(key, tried)
        except NoUpstreamError:
            if not (route.wildcard and key is not None):
                raise
            # A model no route names and no upstream reports: let an upstream answer
            # (404 for an unknown model, its own reason for a model that is not ready).
            return pool.pick(None, tried)

    async def _try(
        self, pool: Pool, up: Upstream, path: bytes, call: Call, timeout: float
    ) -> tuple[_Sent | UpstreamFailure, str]:
        """One try on ``up``: (what came back, a reason label); feeds outlier detection."""
        up.outstanding += 1
        try:
            resp = await up.conns.request(call.method, path, call.headers, call.body, timeout)
        except UpstreamFailure as exc:
            pool.record_failure(up)
            reason = type(exc).__name__
            self.metrics.upstream_requests(pool.name, up.address, reason).inc()
            return exc, reason
        finally:
            up.outstanding -= 1
        status = resp.status
        if status >= 500:
            pool.record_failure(up)
        else:
            pool.record_success(up)
        self.metrics.upstream_requests(pool.name, up.address, _STATUS_CLASS[status // 100]).inc()
        return _Sent(resp, up.address), str(status)

    async def _degrade(
        self, route: Route, exc: PinnaceError, reason: str, suffix: bytes, call: Call
    ) -> Reply:
        if reason not in route.fallback_on:
            raise exc
        if route.fallback_static is not None:
            status, body = route.fallback_static
            self.metrics.fallbacks(route.name, "static", reason).inc()
            headers = [(b"content-type", b"application/json"), (DEGRADED, b"static")]
            return Reply(status, headers, body, "fallback")
        target = route.fallback_target
        assert target is not None
        self.metrics.fallbacks(route.name, "model", reason).inc()
        path = target.prefix + suffix
        if call.query:
            path += b"?" + call.query
        deadline = time.monotonic() + (
            route.config.fallback.deadline_s if route.config.fallback is not None else 1.0
        )
        try:
            sent = await self._tries(route, target.pool, target.key, path, call, deadline)
        except PinnaceError:
            raise exc from None  # the caller learns why the primary failed
        reply = reply_from(sent.response, sent.address, "fallback")
        reply.headers.append((DEGRADED, b"fallback=" + target.model.encode()))
        return reply

    def _shadow_sender(self, call: Call) -> Sender:
        async def send(target: Target, suffix: bytes, timeout: float) -> Response:
            pool = target.pool
            up = pool.pick(target.key)
            up.outstanding += 1
            try:
                return await up.conns.request(
                    call.method, target.prefix + suffix, call.headers, call.body, timeout
                )
            finally:
                up.outstanding -= 1

        return send


def _deadline_passed(route: Route) -> DeadlineExceededError:
    return DeadlineExceededError(f"route {route.name!r}: deadline of {route.deadline:g}s passed")
