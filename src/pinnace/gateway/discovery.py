"""Discovery: who is in a pool (static list, DNS), who is healthy, and which models each has.

One :class:`PoolWatcher` per pool runs three small loops: active health checks, model
readiness (the repository index on the management listener when configured, otherwise
``GET /v2/models/{m}[/versions/{v}]/ready`` on the data listener for the models the routes
name), and DNS resolution when the pool has a ``dns`` entry. Every probe has a timeout and a
failing probe never throws out of its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable

import msgspec

from pinnace.gateway.client import ConnectionPool, UpstreamFailure
from pinnace.gateway.config import management_token
from pinnace.gateway.upstream import ModelKey, Pool, Upstream

log = logging.getLogger("pinnace.gateway.discovery")

_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, "any": socket.AF_UNSPEC}


class _IndexEntry(msgspec.Struct):
    name: str
    version: str | int | None = None
    state: str = ""


class PoolWatcher:
    """Keeps one pool's membership, health and model readiness current."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._tasks: list[asyncio.Task[None]] = []
        self._mgmt: dict[str, ConnectionPool] = {}
        self._index_decoder = msgspec.json.Decoder(list[_IndexEntry])
        pool.prober = self.probe_key

    async def start(self, first_round_timeout: float) -> None:
        """Resolve, probe once (bounded by ``first_round_timeout``), then loop in the background."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(first_round_timeout):
                if self.pool.config.dns is not None:
                    await self.resolve()
                await self.check_health()
                await self.discover_models()
        self._tasks = [
            asyncio.create_task(self._every(self._hc_interval, self.check_health)),
            asyncio.create_task(self._every(self._discovery_interval, self.discover_models)),
            asyncio.create_task(self._every(self._dns_interval, self.resolve)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for conns in self._mgmt.values():
            conns.close()

    def _hc_interval(self) -> float:
        return self.pool.config.health_check.interval_s

    def _discovery_interval(self) -> float:
        return self.pool.config.discovery.interval_s

    def _dns_interval(self) -> float:
        dns = self.pool.config.dns
        return dns.interval_s if dns is not None else 5.0

    async def _every(self, interval: Callable[[], float], step: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval())
            try:
                await step()
                self.pool.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # a probe loop must survive anything a probe does
                log.exception("discovery step failed for pool %s", self.pool.name)

    # -- DNS -----------------------------------------------------------------------------------
    async def resolve(self) -> None:
        dns = self.pool.config.dns
        if dns is None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(5.0):
                infos = await loop.getaddrinfo(
                    dns.name, dns.port, family=_FAMILIES[dns.family], type=socket.SOCK_STREAM
                )
        except (OSError, TimeoutError) as exc:
            # Keep the last answer: a DNS blip must not empty a pool.
            log.warning("pool %s: cannot resolve %s: %s", self.pool.name, dns.name, exc)
            return
        addresses = set()
        for family, _, _, _, sockaddr in infos:
            ip = str(sockaddr[0])
            host = f"[{ip}]" if family == socket.AF_INET6 else ip
            addresses.add(f"{host}:{dns.port}")
        if addresses != self.pool.dynamic:
            log.info("pool %s: %s resolves to %s", self.pool.name, dns.name, sorted(addresses))
            self.pool.set_dynamic(addresses)
            await self.check_health()
            await self.discover_models()

    # -- active health -------------------------------------------------------------------------
    async def check_health(self) -> None:
        members = list(self.pool.members.values())
        results = await asyncio.gather(*(self._probe_health(u) for u in members))
        hc = self.pool.config.health_check
        changed = False
        for up, ok in zip(members, results, strict=True):
            if ok:
                up.hc_ok, up.hc_fail = up.hc_ok + 1, 0
                if not up.healthy and up.hc_ok >= hc.healthy_threshold:
                    up.healthy = changed = True
                    log.info("pool %s: %s is healthy", self.pool.name, up.address)
            else:
                up.hc_ok, up.hc_fail = 0, up.hc_fail + 1
                if up.healthy and up.hc_fail >= hc.unhealthy_threshold:
                    up.healthy = False
                    changed = True
                    log.warning("pool %s: %s is unhealthy", self.pool.name, up.address)
        if changed:
            self.pool.changed()

    async def _probe_health(self, up: Upstream) -> bool:
        hc = self.pool.config.health_check
        try:
            resp = await up.probe_conns.request(b"GET", hc.path.encode(), (), b"", hc.timeout_s)
        except UpstreamFailure:
            return False
        return resp.status == 200

    # -- model readiness -----------------------------------------------------------------------
    async def discover_models(self) -> None:
        if not self.pool.config.discovery.model_aware:
            return
        members = [u for u in self.pool.members.values() if u.healthy]
        mgmt = self.pool.config.management
        results: list[tuple[frozenset[ModelKey], frozenset[ModelKey] | None] | None]
        if mgmt is not None:
            results = list(
                await asyncio.gather(*(self._read_index(u) for u in members))
            )
        else:
            keys = sorted(self.pool.watched, key=lambda k: (k[0], k[1] or ""))
            results = list(await asyncio.gather(*(self._read_ready(u, keys) for u in members)))
        changed = False
        for up, found in zip(members, results, strict=True):
            if found is None:
                continue  # keep what we knew; the health check decides about the upstream
            ready, known = found
            if ready != up.ready or known != up.ready_known:
                up.ready, up.ready_known = ready, known
                changed = True
        if changed:
            self.pool.changed()

    async def probe_key(self, key: ModelKey) -> None:
        """Readiness of one model key on every healthy upstream, merged into what we know."""
        members = [u for u in self.pool.members.values() if u.healthy]
        results = await asyncio.gather(*(self._read_ready(u, [key]) for u in members))
        for up, found in zip(members, results, strict=True):
            if found is not None:
                ready, known = found
                up.ready = (up.ready - {key}) | ready
                up.ready_known = (up.ready_known or frozenset()) | known
        self.pool.changed()

    async def _read_index(self, up: Upstream) -> tuple[frozenset[ModelKey], None] | None:
        mgmt = self.pool.config.management
        port = self.pool.management_port(up)
        assert mgmt is not None and port is not None
        conns = self._mgmt.get(up.address)
        if conns is None or conns.port != port:
            conns = self._mgmt[up.address] = ConnectionPool(up.host, port, max_idle=2)
        headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        token = management_token(mgmt)
        if token:
            headers.append((b"authorization", b"Bearer " + token.encode()))
        timeout = self.pool.config.discovery.timeout_s
        try:
            resp = await conns.request(b"POST", b"/v2/repository/index", headers, b"{}", timeout)
            if resp.status != 200:
                log.warning("pool %s: index of %s answered %d", self.pool.name, up.address,
                            resp.status)
                return None
            entries = self._index_decoder.decode(resp.body)
        except (UpstreamFailure, ValueError) as exc:  # ValueError: msgspec's, or not UTF-8
            log.warning("pool %s: cannot read the index of %s: %s", self.pool.name,
                        up.address, exc)
            return None
        ready: set[ModelKey] = set()
        for e in entries:
            if e.state.upper() == "READY":
                ready.add((e.name, None))
                if e.version not in (None, ""):
                    ready.add((e.name, str(e.version)))
        return frozenset(ready), None

    async def _read_ready(
        self, up: Upstream, keys: list[ModelKey]
    ) -> tuple[frozenset[ModelKey], frozenset[ModelKey]] | None:
        timeout = self.pool.config.discovery.timeout_s
        ready: set[ModelKey] = set()
        known: set[ModelKey] = set()
        for key in keys:
            model, version = key
            path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/ready"
            try:
                resp = await up.probe_conns.request(b"GET", path.encode(), (), b"", timeout)
            except UpstreamFailure:
                return None
            known.add(key)
            if resp.status == 200:
                ready.add(key)
        return frozenset(ready), frozenset(known)
