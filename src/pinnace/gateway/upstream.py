"""Upstreams and pools: health, model readiness, outlier ejection, breakers and balancing.

An :class:`Upstream` is one model server's data listener with what the gateway knows of it:
in-flight requests, active-health verdict, passive-failure streak, ejection, and the set of
(model, version) pairs it has ready. A :class:`Pool` is a named group of upstreams with one
policy; :meth:`Pool.pick` chooses where a request goes.

Candidate lists per (model, version) are cached and rebuilt only when health, readiness or
membership change (the pool's ``generation``); ejection and breaker state are checked at pick
time because they change per request.
"""

from __future__ import annotations

import asyncio
import random
import time
from bisect import bisect
from collections.abc import Awaitable, Callable, Iterable
from itertools import accumulate

from pinnace.errors import ModelNotReadyError, ServerBusyError
from pinnace.gateway.client import ConnectionPool
from pinnace.gateway.config import PoolConfig, parse_size, split_address
from pinnace.gateway.metrics import GatewayMetrics

ModelKey = tuple[str, str | None]
"""(model, version); version ``None`` means "some version of the model is ready"."""

_OK, _EJECTED, _FULL = 0, 1, 2

MAX_LEARNED_MODELS = 256
"""Models first seen in requests (wildcard routes) that discovery starts to watch; a bound so
that clients asking for random names cannot grow the probe load."""


class NoUpstreamError(ModelNotReadyError):
    """No upstream of the pool is healthy, not ejected and has the model ready."""


class BreakerOpenError(ServerBusyError):
    """Every candidate upstream is at its pending-request limit."""


class Upstream:
    """One upstream server as the gateway sees it."""

    __slots__ = (
        "address",
        "conns",
        "consecutive_failures",
        "ejected_until",
        "hc_fail",
        "hc_ok",
        "healthy",
        "host",
        "outstanding",
        "port",
        "probe_conns",
        "readmitted_at",
        "ready",
        "ready_known",
        "times_ejected",
        "weight",
    )

    def __init__(self, address: str, weight: int, config: PoolConfig) -> None:
        self.address = address
        self.host, self.port = split_address(address)
        self.weight = weight
        self.conns = ConnectionPool(self.host, self.port)
        self.configure(config)
        # Probes get their own connections so they neither queue behind nor starve traffic.
        self.probe_conns = ConnectionPool(self.host, self.port, max_idle=2)
        self.outstanding = 0
        self.healthy = False  # until the first health check passes
        self.hc_ok = 0
        self.hc_fail = 0
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.times_ejected = 0
        self.readmitted_at = 0.0
        self.ready: frozenset[ModelKey] = frozenset()
        self.ready_known: frozenset[ModelKey] | None = frozenset()
        """The keys ``ready`` is authoritative for; ``None``: all (read from the index)."""

    def configure(self, config: PoolConfig) -> None:
        """Apply a (reloaded) connection policy; open connections stay."""
        c, conns = config.connection, self.conns
        conns.connect_timeout = c.connect_timeout_s
        conns.idle_timeout = c.idle_timeout_s
        conns.max_idle = c.max_idle
        conns.max_response_bytes = parse_size(c.max_response_bytes)

    def is_ejected(self, now: float) -> bool:
        return self.ejected_until > now

    def retire(self) -> None:
        self.conns.retire()
        self.probe_conns.close()


class Pool:
    """A named set of upstreams sharing one policy."""

    def __init__(self, name: str, config: PoolConfig, metrics: GatewayMetrics) -> None:
        self.name = name
        self.config = config
        self.metrics = metrics
        self.members: dict[str, Upstream] = {}
        self.static: dict[str, int] = {}
        self.management_ports: dict[str, int] = {}
        self.dynamic: set[str] = set()
        self.watched: set[ModelKey] = set()
        """Model keys whose readiness discovery polls (per-model readiness mode)."""
        self.generation = 0
        self._cache: dict[ModelKey | None, tuple[Upstream, ...]] = {}
        self._cache_gen = -1
        self._rr = 0
        self.prober: Callable[[ModelKey], Awaitable[None]] | None = None
        """Set by discovery: asks every upstream about one model key, now."""
        self._learning: dict[ModelKey, asyncio.Future[None]] = {}
        self.apply(config)

    # -- membership ----------------------------------------------------------------------------
    def apply(self, config: PoolConfig) -> None:
        """Take a (re)loaded config: policy now, members added or retired by address."""
        self.config = config
        self.static = {u.address: u.weight for u in config.upstreams}
        self.management_ports = {
            u.address: u.management_port for u in config.upstreams if u.management_port
        }
        self._sync_members()

    def set_dynamic(self, addresses: Iterable[str]) -> None:
        self.dynamic = set(addresses)
        self._sync_members()

    def _sync_members(self) -> None:
        wanted = dict.fromkeys(self.dynamic, 1) | self.static
        for addr in list(self.members):
            if addr not in wanted:
                self.members.pop(addr).retire()
        for addr, weight in wanted.items():
            up = self.members.get(addr)
            if up is None:
                self.members[addr] = Upstream(addr, weight, self.config)
            else:
                up.weight = weight
                up.configure(self.config)
        self.changed()

    def changed(self) -> None:
        self.generation += 1

    def close(self) -> None:
        for up in self.members.values():
            up.retire()
        self.members.clear()
        self.changed()

    # -- eligibility ---------------------------------------------------------------------------
    def serves(self, up: Upstream, key: ModelKey | None) -> bool:
        if key is None or not self.config.discovery.model_aware:
            return True
        if up.ready_known is None or key in up.ready_known:
            return key in up.ready
        return True  # not known yet: let the upstream itself answer

    def is_unknown(self, key: ModelKey | None) -> bool:
        """A model no route names, asked for the first time, in per-model readiness mode."""
        return (
            key is not None
            and key not in self.watched
            and self.prober is not None
            and self.config.management is None
            and self.config.discovery.model_aware
        )

    async def learn(self, key: ModelKey) -> None:
        """Probe ``key`` on every upstream before routing it, and watch it from now on.

        Only the first request for a model waits (bounded by the discovery timeout); the
        number of watched keys is capped so that clients cannot grow the probe load.
        """
        pending = self._learning.get(key)
        if pending is not None:
            await asyncio.shield(pending)
            return
        if len(self.watched) >= MAX_LEARNED_MODELS or self.prober is None:
            return
        future = self._learning[key] = asyncio.get_running_loop().create_future()
        try:
            await self.prober(key)
        finally:
            self.watched.add(key)
            del self._learning[key]
            future.set_result(None)

    def candidates(self, key: ModelKey | None) -> tuple[Upstream, ...]:
        if self._cache_gen != self.generation:
            self._cache.clear()
            self._cache_gen = self.generation
        found = self._cache.get(key)
        if found is None:
            found = tuple(u for u in self.members.values() if u.healthy and self.serves(u, key))
            self._cache[key] = found
        return found

    def management_port(self, up: Upstream) -> int | None:
        mgmt = self.config.management
        if mgmt is None:
            return None
        return self.management_ports.get(up.address, mgmt.port)

    def any_healthy(self) -> bool:
        return any(u.healthy for u in self.members.values())

    def _state(self, up: Upstream, now: float) -> int:
        if up.ejected_until:
            if up.ejected_until > now:
                return _EJECTED
            self._readmit(up, now)
        if up.outstanding >= self.config.breaker.max_pending:
            return _FULL
        return _OK

    # -- picking -------------------------------------------------------------------------------
    def pick(self, key: ModelKey | None, exclude: tuple[Upstream, ...] = ()) -> Upstream:
        """An upstream for ``key``; raises NoUpstreamError or BreakerOpenError.

        ``exclude`` (upstreams already tried) is a preference: when nothing else is left they
        are used again rather than failing.
        """
        cands = self.candidates(key)
        now = time.monotonic()
        n = len(cands)
        if n >= 2 and self.config.balancer == "p2c" and not exclude:
            i = random.randrange(n)
            j = random.randrange(n - 1)
            a, b = cands[i], cands[j + 1 if j >= i else j]
            sa, sb = self._state(a, now), self._state(b, now)
            if sa == _OK and sb == _OK:
                return a if a.outstanding <= b.outstanding else b
            if sa == _OK:
                return a
            if sb == _OK:
                return b
        return self._pick_slow(cands, now, exclude)

    def _pick_slow(
        self, cands: tuple[Upstream, ...], now: float, exclude: tuple[Upstream, ...]
    ) -> Upstream:
        ok = [u for u in cands if self._state(u, now) == _OK]
        if not ok:
            if any(self._state(u, now) == _FULL for u in cands):
                self.metrics.overflow(self.name)
                raise BreakerOpenError(
                    f"pool {self.name!r}: every upstream is at its pending-request limit",
                    retry_after=1,
                )
            raise NoUpstreamError(f"pool {self.name!r}: no healthy upstream has the model ready")
        fresh = [u for u in ok if u not in exclude] or ok
        balancer = self.config.balancer
        if balancer == "round_robin":
            self._rr += 1
            return fresh[self._rr % len(fresh)]
        if balancer == "weighted":
            cum = list(accumulate(u.weight for u in fresh))
            return fresh[bisect(cum, random.random() * cum[-1])]
        if len(fresh) == 1:
            return fresh[0]
        a, b = random.sample(fresh, 2)
        return a if a.outstanding <= b.outstanding else b

    # -- passive outlier detection -------------------------------------------------------------
    def record_success(self, up: Upstream) -> None:
        up.consecutive_failures = 0

    def record_failure(self, up: Upstream) -> None:
        up.consecutive_failures += 1
        od = self.config.outlier
        if not od.enabled or up.consecutive_failures < od.consecutive_failures:
            return
        now = time.monotonic()
        if up.is_ejected(now) or up.address not in self.members:
            return
        limit = max(1, int(len(self.members) * od.max_ejection_percent / 100))
        ejected = sum(1 for u in self.members.values() if u.is_ejected(now))
        if ejected >= limit:
            return
        # The multiplier decays by one for every base period the upstream stayed in.
        if up.readmitted_at:
            decay = int((now - up.readmitted_at) / od.base_ejection_s)
            up.times_ejected = max(0, up.times_ejected - decay)
        up.times_ejected += 1
        up.ejected_until = now + od.base_ejection_s * up.times_ejected
        up.consecutive_failures = 0
        self.metrics.ejection(self.name, up.address)

    def _readmit(self, up: Upstream, now: float) -> None:
        up.ejected_until = 0.0
        up.readmitted_at = now
        up.consecutive_failures = 0
        self.metrics.readmission(self.name, up.address)

    def sweep(self) -> None:
        """Periodic upkeep: readmit expired ejections, close long-idle connections."""
        now = time.monotonic()
        idle = self.config.connection.idle_timeout_s
        for up in self.members.values():
            if up.ejected_until and up.ejected_until <= now:
                self._readmit(up, now)
            up.conns.close_idle(older_than=idle)
