"""Prometheus metrics of the model server, on a registry that is handed in (never the global one).

Why not prometheus-client's own ``Counter`` and ``Histogram``: each ``observe`` takes a lock and
each ``labels()`` call builds a key under another (about 1 µs each), and the hot path records
several values per request. Everything here is recorded on the event loop thread, so the
families below are plain integers and floats behind a dict of label tuples (about 0.15 µs per
observation), turned into Prometheus samples only when ``/metrics`` is scraped — on the same
thread. prometheus-client still does the exposition, the registry and the process metrics.

Rule for every family: **one writer thread per child**. The server records on the event loop;
a background writer may own children of its own (label values no loop code uses).

Label values come only from the repository (registered model names and their version numbers)
and from route templates; any other model name becomes ``__unknown__``, so requests naming
random models add no series.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from pinnace import __version__
from pinnace.core.stats import ExecutedBatch, RecordFactory, RequestRecord
from pinnace.observability.deferred import Deferred
from pinnace.repository.state import ModelState

if TYPE_CHECKING:
    from pinnace.core.dataplane import DataPlane
    from pinnace.repository.version import ServedVersion

UNKNOWN: Final = "__unknown__"
"""The model label of requests naming a model the repository does not know."""

_Finished = tuple[str, str, str, str, int, float, bool]
"""A finished request as :meth:`ServerMetrics.on_request` is told of it."""

LATENCY_BUCKETS: Final = (
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
"""Seconds, 10 µs to 30 s: an ONNX row takes microseconds, a large batch on CPU seconds."""

BATCH_BUCKETS: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)
"""Rows per model execution."""


# -- families recorded on one thread, exposed at scrape time --------------------------------


class CounterChild:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class HistogramChild:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are "less or equal".
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class CounterFamily:
    """A labelled counter. ``name`` has no ``_total``; the exposition adds it."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.children: dict[tuple[str, ...], CounterChild] = {}

    def labels(self, *values: str) -> CounterChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = CounterChild()
        return child

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, child in list(self.children.items()):
            family.add_metric(list(values), child.value)
        return family


class HistogramFamily:
    """A labelled histogram with fixed bucket bounds."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = list(labels)
        self.bounds = tuple(float(b) for b in buckets)
        self._les = [_le(b) for b in self.bounds] + ["+Inf"]
        self.children: dict[tuple[str, ...], HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = HistogramChild(self.bounds)
        return child

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, child in list(self.children.items()):
            cumulative, buckets = 0, []
            for le, count in zip(self._les, list(child.counts), strict=True):
                cumulative += count
                buckets.append((le, float(cumulative)))
            family.add_metric(list(values), buckets, child.sum)
        return family


def _le(bound: float) -> str:
    return repr(bound) if bound != int(bound) else f"{bound:.1f}"


# -- the server's metrics -------------------------------------------------------------------


class _ModelSeries:
    """The children one model version records into per batch, looked up once per batch."""

    __slots__ = ("batch_size", "compute", "queue")

    def __init__(self, metrics: ServerMetrics, model: str, version: str) -> None:
        self.queue = metrics.queue_duration.labels(model, version)
        self.compute = metrics.compute_duration.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)


class ServerMetrics(Collector):
    """Every metric of ``pinnace serve``; registers itself (and process metrics) on ``registry``.

    The repository's state (queue depths, readiness, load times) is read at scrape time from
    the data plane given to :meth:`bind`, so it costs the hot path nothing.
    """

    def __init__(self, registry: CollectorRegistry, *, process_metrics: bool = True) -> None:
        self.registry = registry
        p = "pinnace_"
        self.requests = CounterFamily(
            p + "requests",
            "Requests answered, by protocol, route template, model, version and outcome.",
            ["protocol", "route", "model", "version", "outcome"],
        )
        self.request_duration = HistogramFamily(
            p + "request_duration_seconds",
            "Total time of inference requests in the server, decode to encode.",
            ["protocol", "model", "version"],
            LATENCY_BUCKETS,
        )
        self.queue_duration = HistogramFamily(
            p + "queue_duration_seconds",
            "Time inference requests waited in the batcher's queue.",
            ["model", "version"],
            LATENCY_BUCKETS,
        )
        self.compute_duration = HistogramFamily(
            p + "compute_duration_seconds",
            "Time of each model execution (one batch): assemble inputs, run, split outputs.",
            ["model", "version"],
            LATENCY_BUCKETS,
        )
        self.batch_size = HistogramFamily(
            p + "batch_size",
            "Rows per model execution.",
            ["model", "version"],
            BATCH_BUCKETS,
        )
        self.loads = CounterFamily(
            p + "model_loads",
            "Model version loads (startup, reload, management API), by outcome.",
            ["model", "version", "outcome"],
        )
        self._series: dict[tuple[str, str], _ModelSeries] = {}
        # Children per (protocol, route, model, version, status): one lookup per request.
        self._request_children: dict[tuple[str, str, str, str, int], list[Any]] = {}
        self._finished: Deferred[_Finished] = Deferred("counting requests", self._count, most=65536)
        self._known: dict[str, set[str]] = {}
        self._dataplane: DataPlane | None = None
        self._artifact_bytes: weakref.WeakKeyDictionary[ServedVersion, int] = (
            weakref.WeakKeyDictionary()
        )
        self._families: tuple[CounterFamily | HistogramFamily, ...] = (
            self.requests,
            self.request_duration,
            self.queue_duration,
            self.compute_duration,
            self.batch_size,
            self.loads,
        )
        registry.register(self)
        if process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def bind(self, dataplane: DataPlane) -> None:
        """Read the repository's state from ``dataplane`` at scrape time."""
        self._dataplane = dataplane

    # -- recording (event loop thread) -----------------------------------------------------

    record_factory: RecordFactory | None = RequestRecord
    """As an :class:`~pinnace.core.stats.InferenceObserver`: records are always made, because
    the request metrics take the served version from them."""

    def on_batch(self, model: str, version: str, batch: ExecutedBatch) -> None:
        series = self._series.get((model, version))
        if series is None:
            series = self._series[(model, version)] = _ModelSeries(self, model, version)
        # HistogramChild.observe inlined for the per-request loop: this runs for every request.
        queue = series.queue
        bounds, counts = queue.bounds, queue.counts
        for waited in batch.queue_s:
            counts[bisect.bisect_left(bounds, waited)] += 1
            queue.sum += waited
        series.compute.observe(batch.t_input + batch.t_infer + batch.t_output)
        series.batch_size.observe(batch.rows)

    def on_request(
        self, protocol: str, route: str, model: str, version: str, status: int, seconds: float,
        timed: bool,
    ) -> None:
        """One finished request, with label values already guarded; ``timed``: it reached a
        model, so its duration is observed too. Counted with the others of the next
        millisecond (see :mod:`pinnace.observability.deferred`); a scrape counts it first."""
        self._finished.add((protocol, route, model, version, status, seconds, timed))

    def _count(self, finished: list[_Finished]) -> None:
        children_of = self._request_children
        for protocol, route, model, version, status, seconds, timed in finished:
            key = (protocol, route, model, version, status)
            children = children_of.get(key)
            if children is None:
                counter = self.requests.labels(protocol, route, model, version, outcome_of(protocol, status))
                children = children_of[key] = [counter, None]
            children[0].value += 1
            if timed:
                hist = children[1]
                if hist is None:
                    hist = children[1] = self.request_duration.labels(protocol, model, version)
                hist.counts[bisect.bisect_left(hist.bounds, seconds)] += 1
                hist.sum += seconds

    def on_load(self, model: str, version: str, seconds: float, ok: bool) -> None:
        self._known.setdefault(model, set()).add(version)
        self.loads.labels(model, version, "success" if ok else "failure").inc()

    def model_labels(self, model: str, version: str) -> tuple[str, str]:
        """(model, version) label values for a request that named them: registered or
        ``__unknown__``."""
        versions = self._known.get(model)
        if versions is None:
            if not self._registered(model):
                return UNKNOWN, ""
            versions = self._known[model] = set()
        if version and version not in versions:
            return model, UNKNOWN
        return model, version

    def _registered(self, model: str) -> bool:
        # Only names the repository found as model folders: bounded by the repository itself.
        dataplane = self._dataplane
        return dataplane is not None and model in dataplane.repository.names()

    # -- exposition ------------------------------------------------------------------------

    def exposition(self) -> tuple[bytes, bytes]:
        """(content type, body) for ``GET /metrics``."""
        return CONTENT_TYPE_LATEST.encode(), generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        self._finished.flush()  # the requests answered in the last millisecond, too
        for family in self._families:
            yield family.collect()
        info = GaugeMetricFamily("pinnace_info", "The pinnace version serving.", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        if self._dataplane is not None:
            yield from self._repository_state(self._dataplane)

    def _repository_state(self, dataplane: DataPlane) -> Iterable[Metric]:
        p = "pinnace_"
        version_labels = ["model", "version"]
        ready = GaugeMetricFamily(p + "server_ready", "1 while the server reports ready.")
        ready.add_metric([], float(dataplane.ready()))
        state = GaugeMetricFamily(
            p + "model_state", "1 for the model's current state (readiness state machine).",
            labels=["model", "state"],
        )
        repository = dataplane.repository
        for name in repository.names():
            current, _ = repository.state_of(name)
            for candidate in ModelState:
                state.add_metric([name, candidate.value], float(candidate is current))
        gauges = {
            "queue": GaugeMetricFamily(
                p + "queue_depth", "Requests waiting in the batcher's queue.", labels=version_labels
            ),
            "in_flight": GaugeMetricFamily(
                p + "inflight_requests", "Requests queued or executing in the model.",
                labels=version_labels,
            ),
            "busy": GaugeMetricFamily(
                p + "busy_instances", "Model instances executing a batch now.",
                labels=version_labels,
            ),
            "load": GaugeMetricFamily(
                p + "model_load_duration_seconds",
                "How long the served version took to load and warm up.", labels=version_labels,
            ),
            "artifact": GaugeMetricFamily(
                p + "model_artifact_bytes", "Size on disk of the served version's artifacts.",
                labels=version_labels,
            ),
            "memory": GaugeMetricFamily(
                p + "model_memory_bytes",
                "Memory the runtime reports for the version (only runtimes that can measure it).",
                labels=version_labels,
            ),
        }
        for served in repository.served_versions():
            labels = [served.name, served.version_str]
            scheduler: Any = served.scheduler
            if scheduler is not None:
                gauges["queue"].add_metric(labels, float(getattr(scheduler, "queue_depth", 0)))
                gauges["in_flight"].add_metric(labels, float(getattr(scheduler, "in_flight", 0)))
                gauges["busy"].add_metric(labels, float(getattr(scheduler, "busy_slots", 0)))
            gauges["load"].add_metric(labels, served.load_seconds)
            gauges["artifact"].add_metric(labels, float(self._artifacts_size(served)))
            memory = _runtime_memory(served)
            if memory is not None:
                gauges["memory"].add_metric(labels, float(memory))
        return [ready, state, *gauges.values()]

    def _artifacts_size(self, served: ServedVersion) -> int:
        size = self._artifact_bytes.get(served)
        if size is None:
            size = self._artifact_bytes[served] = _folder_size(served)
        return size


def _folder_size(served: ServedVersion) -> int:
    try:
        if served.manifest.unversioned:
            return sum(
                (served.version_dir / rel).stat().st_size for rel in served.manifest.artifacts
            )
        return sum(p.stat().st_size for p in served.version_dir.rglob("*") if p.is_file())
    except OSError:
        return 0


def _runtime_memory(served: ServedVersion) -> int | None:
    """A runtime may define ``memory_bytes() -> int | None``; none is required to."""
    measure: Callable[[], int | None] | None = getattr(served.runtime, "memory_bytes", None)
    if measure is None:
        return None
    try:
        return measure()
    except Exception:
        return None


# -- outcomes -------------------------------------------------------------------------------

_HTTP_OUTCOMES: Final = {
    200: "success", 400: "invalid", 401: "denied", 403: "denied", 404: "not_found",
    405: "invalid", 413: "invalid", 429: "rejected", 499: "cancelled", 500: "error",
    502: "error", 503: "unavailable", 504: "timeout",
}
# gRPC status codes by number (grpc.StatusCode values), for transports that report them.
_GRPC_OUTCOMES: Final = {
    0: "success", 1: "cancelled", 2: "error", 3: "invalid", 4: "timeout", 5: "not_found",
    6: "invalid", 7: "denied", 8: "rejected", 9: "invalid", 10: "error", 11: "invalid",
    12: "not_found", 13: "error", 14: "unavailable", 15: "error", 16: "denied",
}


def outcome_of(protocol: str, status: int) -> str:
    """A small fixed set of outcomes from an HTTP status or, for gRPC, a status code number."""
    if protocol == "grpc" and status < 100:
        return _GRPC_OUTCOMES.get(status, "error")
    outcome = _HTTP_OUTCOMES.get(status)
    if outcome is not None:
        return outcome
    if 200 <= status < 400:
        return "success"
    return "invalid" if 400 <= status < 500 else "error"
