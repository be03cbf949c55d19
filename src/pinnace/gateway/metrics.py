"""The gateway's Prometheus metrics, on a registry that is handed in (never the global one).

Label values come only from configured names (routes, pools, keys) and from upstream
addresses the gateway itself chose (config or DNS); nothing a client sends becomes a label.
Gauges that describe state (health, ejection, breaker, in-flight) are read from the pools at
scrape time by a collector, so the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from pinnace.gateway.upstream import Pool

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
_DIFF_BUCKETS = (1e-9, 1e-7, 1e-5, 1e-3, 1e-2, 1e-1, 1.0, 10.0, float("inf"))


class _Children:
    """Label children cached by value tuple: ``labels()`` takes a lock and builds a key."""

    __slots__ = ("_cache", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._cache: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._cache.get(values)
        if child is None:
            child = self._cache[values] = self._metric.labels(*values)
        return child


class GatewayMetrics:
    """Every metric the gateway records; one instance per process, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "pinnace_gateway_"
        self.requests = _Children(Counter(
            p + "requests", "Requests answered, by route and outcome.",
            ["route", "outcome"], registry=registry))
        self.latency = _Children(Histogram(
            p + "request_duration_seconds", "Time from request to answer, by route.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry))
        self.upstream_requests = _Children(Counter(
            p + "upstream_requests", "Tries sent to upstreams, by outcome.",
            ["pool", "upstream", "outcome"], registry=registry))
        self.retries = _Children(Counter(
            p + "retries", "Retries, by route and reason.", ["route", "reason"],
            registry=registry))
        self.budget_exhausted = _Children(Counter(
            p + "retry_budget_exhausted", "Retries refused by the retry budget.", ["route"],
            registry=registry))
        self.ejections = _Children(Counter(
            p + "ejections", "Outlier ejections.", ["pool", "upstream"], registry=registry))
        self.readmissions = _Children(Counter(
            p + "readmissions", "Upstreams readmitted after an ejection.",
            ["pool", "upstream"], registry=registry))
        self.overflows = _Children(Counter(
            p + "breaker_overflows", "Requests refused because every candidate was at its "
            "pending limit.", ["pool"], registry=registry))
        self.fallbacks = _Children(Counter(
            p + "fallbacks", "Degraded answers, by route, kind (model/static) and reason.",
            ["route", "kind", "reason"], registry=registry))
        self.shadow = _Children(Counter(
            p + "shadow_requests", "Mirrored requests, by route and outcome "
            "(match, diverged, error, skipped).", ["route", "outcome"], registry=registry))
        self.shadow_latency = _Children(Histogram(
            p + "shadow_duration_seconds", "Latency of mirrored pairs, primary and shadow.",
            ["route", "side"], buckets=_LATENCY_BUCKETS, registry=registry))
        self.shadow_diff = _Children(Histogram(
            p + "shadow_max_abs_diff", "Largest absolute difference between primary and "
            "shadow outputs.", ["route"], buckets=_DIFF_BUCKETS, registry=registry))
        self.rejected = _Children(Counter(
            p + "rejected", "Requests refused before routing, by reason and key.",
            ["reason", "key"], registry=registry))
        self.reloads = _Children(Counter(
            p + "config_reloads", "Configuration reloads, by outcome.", ["outcome"],
            registry=registry))

    # Small verbs keep call sites short and the label order in one place.
    def overflow(self, pool: str) -> None:
        self.overflows(pool).inc()

    def ejection(self, pool: str, upstream: str) -> None:
        self.ejections(pool, upstream).inc()

    def readmission(self, pool: str, upstream: str) -> None:
        self.readmissions(pool, upstream).inc()

    def watch_pools(self, pools: Callable[[], Iterable[Pool]]) -> None:
        """Register the scrape-time collector of pool state."""
        self.registry.register(_PoolCollector(pools))


class _PoolCollector(Collector):
    def __init__(self, pools: Callable[[], Iterable[Pool]]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        import time

        p = "pinnace_gateway_upstream_"
        labels = ["pool", "upstream"]
        healthy = GaugeMetricFamily(p + "healthy", "1 when active health checks pass.",
                                    labels=labels)
        ejected = GaugeMetricFamily(p + "ejected", "1 while ejected as an outlier.",
                                    labels=labels)
        breaker = GaugeMetricFamily(p + "breaker_open", "1 while at the pending limit.",
                                    labels=labels)
        pending = GaugeMetricFamily(p + "pending", "In-flight requests.", labels=labels)
        conns = GaugeMetricFamily(p + "connections", "Open pooled connections.",
                                  labels=labels)
        models = GaugeMetricFamily(p + "ready_models", "Model versions known ready.",
                                   labels=labels)
        now = time.monotonic()
        for pool in self._pools():
            limit = pool.config.breaker.max_pending
            for up in list(pool.members.values()):
                lv = [pool.name, up.address]
                healthy.add_metric(lv, float(up.healthy))
                ejected.add_metric(lv, float(up.is_ejected(now)))
                breaker.add_metric(lv, float(up.outstanding >= limit))
                pending.add_metric(lv, float(up.outstanding))
                conns.add_metric(lv, float(up.conns.open_connections))
                models.add_metric(lv, float(sum(1 for _, v in up.ready if v is not None)))
        yield from (healthy, ejected, breaker, pending, conns, models)
