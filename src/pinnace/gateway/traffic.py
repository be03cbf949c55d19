"""Traffic policies: where a request goes besides "the model it named".

- :class:`Target`: a model (and version) on a pool, with its request-path prefix ready.
- :class:`Canary`: a weighted split between targets, optionally sticky per API key or header.
- :class:`ShadowMirror`: sends a copy of a share of requests to a candidate in the background,
  compares its outputs with the primary's and records divergence and latency. The caller's
  answer never waits for, or depends on, the mirror.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import zlib
from bisect import bisect
from collections.abc import Awaitable, Callable
from itertools import accumulate
from typing import Any

import msgspec
import numpy as np

from pinnace.gateway.client import Response
from pinnace.gateway.metrics import GatewayMetrics
from pinnace.gateway.upstream import ModelKey, Pool

log = logging.getLogger("pinnace.gateway.shadow")


class Target:
    """Where a request is sent: a model, an optional version and a pool."""

    __slots__ = ("key", "model", "pool", "prefix", "version")

    def __init__(self, model: str, version: str | None, pool: Pool) -> None:
        self.model = model
        self.version = version
        self.pool = pool
        self.key: ModelKey = (model, version)
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "")
        self.prefix = path.encode()

    def __repr__(self) -> str:
        return f"{self.model}" + (f"/{self.version}" if self.version else "")


class Canary:
    """Chooses a target by weight; the same sticky value always gets the same target."""

    __slots__ = ("_cum", "_total", "header", "sticky_key", "targets")

    def __init__(self, targets: list[tuple[Target, float]], sticky: str | None) -> None:
        self.targets = [t for t, _ in targets]
        self._cum = list(accumulate(w for _, w in targets))
        self._total = self._cum[-1]
        self.sticky_key = sticky == "key"
        self.header = (
            sticky.removeprefix("header:").lower().encode()
            if sticky and sticky.startswith("header:") else None
        )

    def choose(self, sticky_value: bytes | None) -> Target:
        # crc32, not hash(): stable across processes, restarts and replicas.
        share = zlib.crc32(sticky_value) / 4294967296.0 if sticky_value else random.random()
        point = share * self._total
        return self.targets[min(bisect(self._cum, point), len(self.targets) - 1)]


Sender = Callable[[Target, bytes, float], Awaitable[Response]]
"""Sends one try of a request to a target: (target, path suffix, timeout) → response."""


class ShadowMirror:
    """Mirrors a share of a route's requests to a candidate target."""

    def __init__(
        self,
        route: str,
        target: Target,
        percent: float,
        max_in_flight: int,
        timeout: float,
        rtol: float,
        atol: float,
        metrics: GatewayMetrics,
    ) -> None:
        self.route = route
        self.target = target
        self.share = percent / 100.0
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.rtol = rtol
        self.atol = atol
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, send: Sender, suffix: bytes) -> asyncio.Future[tuple[Response, float] | None] | None:
        """Maybe mirror this request; returns the future the caller resolves with its own
        (response, latency), or None when this request is not mirrored."""
        if self.share < 1.0 and random.random() >= self.share:
            return None
        if len(self._tasks) >= self.max_in_flight:
            self.metrics.shadow(self.route, "skipped").inc()
            return None
        primary: asyncio.Future[tuple[Response, float] | None] = (
            asyncio.get_running_loop().create_future()
        )
        task = asyncio.create_task(self._run(send, suffix, primary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return primary

    async def _run(
        self, send: Sender, suffix: bytes, primary: asyncio.Future[tuple[Response, float] | None]
    ) -> None:
        outcome = "error"
        try:
            t0 = time.perf_counter()
            try:
                shadow: Response | None = await send(self.target, suffix, self.timeout)
            except Exception:  # the mirror's failure is recorded, never propagated
                shadow = None
            shadow_s = time.perf_counter() - t0
            async with asyncio.timeout(self.timeout):
                mine = await primary
            if shadow is None or mine is None:
                return
            self.metrics.shadow_latency(self.route, "shadow").observe(shadow_s)
            self.metrics.shadow_latency(self.route, "primary").observe(mine[1])
            same, diff = compare(mine[0], shadow, self.rtol, self.atol)
            if diff is not None:
                self.metrics.shadow_diff(self.route).observe(diff)
            outcome = "match" if same else "diverged"
        except TimeoutError:
            outcome = "error"
        finally:
            self.metrics.shadow(self.route, outcome).inc()

    async def drain(self, timeout: float) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)


class _Output(msgspec.Struct):
    name: str
    datatype: str = ""
    shape: list[int] = msgspec.field(default_factory=list)
    data: Any = None
    parameters: dict[str, Any] | None = None


class _Outputs(msgspec.Struct):
    outputs: list[_Output] = msgspec.field(default_factory=list)


_decode_outputs = msgspec.json.Decoder(_Outputs).decode


def compare(primary: Response, shadow: Response, rtol: float, atol: float) -> tuple[bool, float | None]:
    """(outputs agree, largest absolute numeric difference or None).

    Model name and version are expected to differ and are ignored; outputs are compared by
    name, datatype, shape and values (numbers within rtol/atol). With the binary extension the
    JSON header part and the binary part are compared separately, the latter byte for byte.
    """
    if primary.status != shadow.status:
        return False, None
    if primary.status != 200:
        return True, None
    try:
        p_json, p_bin = _split_binary(primary)
        s_json, s_bin = _split_binary(shadow)
        p_out = {o.name: o for o in _decode_outputs(p_json).outputs}
        s_out = {o.name: o for o in _decode_outputs(s_json).outputs}
    except (msgspec.DecodeError, ValueError):
        return primary.body == shadow.body, None
    if p_out.keys() != s_out.keys() or p_bin != s_bin:
        return False, None
    worst: float | None = None
    for name, a in p_out.items():
        b = s_out[name]
        if a.datatype != b.datatype or a.shape != b.shape:
            return False, worst
        if a.data is None and b.data is None:
            continue
        if a.datatype in ("BYTES", "BOOL") or a.datatype == "":
            if a.data != b.data:
                return False, worst
            continue
        x = np.asarray(a.data, dtype=np.float64)
        y = np.asarray(b.data, dtype=np.float64)
        if x.shape != y.shape:
            return False, worst
        diff = float(np.max(np.abs(x - y))) if x.size else 0.0
        worst = diff if worst is None else max(worst, diff)
        if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
            return False, worst
    return True, worst


def _split_binary(resp: Response) -> tuple[bytes, bytes]:
    for name, value in resp.headers:
        if name == b"inference-header-content-length":
            n = int(value)
            return resp.body[:n], resp.body[n:]
    return resp.body, b""
