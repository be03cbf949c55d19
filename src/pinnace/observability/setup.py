"""Builds the observability a server process uses, from its settings, in one place.

Metrics are always on (they cost the hot path well under a microsecond per request); the access
log, payload logging and tracing only when configured, and OpenTelemetry is imported only then.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from pinnace.core.stats import InferenceObserver, NullObserver, PayloadSink
from pinnace.observability.hooks import RequestListener
from pinnace.repository.repository import LoadListener
from pinnace.settings import ServerSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from pinnace.core.dataplane import DataPlane
    from pinnace.observability.metrics import ServerMetrics
    from pinnace.observability.tracing import Tracing

log = logging.getLogger(__name__)

MetricsHandler = Callable[[], tuple[bytes, bytes]]
"""Returns (content type, body) for ``GET /metrics``."""


@dataclass
class Observability:
    """What the server hands to its parts: each optional, each cheap when absent."""

    observer: InferenceObserver = field(default_factory=NullObserver)
    listener: RequestListener | None = None
    metrics: MetricsHandler | None = None
    on_load: LoadListener | None = None
    payloads: PayloadSink | None = None
    server_metrics: ServerMetrics | None = None
    tracing: Tracing | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def bind(self, dataplane: DataPlane) -> None:
        """Let scrape-time metrics read the repository's state from ``dataplane``."""
        if self.server_metrics is not None:
            self.server_metrics.bind(dataplane)

    def wrap(self, app: Any) -> Any:
        """The data listener's ASGI app, inside the tracing middleware when tracing is on."""
        return self.tracing.middleware(app) if self.tracing is not None else app

    def close(self) -> None:
        """Write what the background writers hold and export the last spans."""
        for close in self.closers:
            try:
                close()
            except Exception:
                log.exception("closing observability failed")


def build_observability(
    settings: ServerSettings,
    *,
    registry: CollectorRegistry | None = None,
    span_exporter: SpanExporter | None = None,
) -> Observability:
    """Metrics on ``registry`` (a new one by default), plus whatever ``settings`` turn on.

    ``span_exporter`` turns tracing on with that exporter whatever ``settings.tracing`` says
    (tests and embedders use an in-memory one).
    """
    from pinnace.observability.access import AccessLog
    from pinnace.observability.listener import ServerListener, TracedObserver
    from pinnace.observability.metrics import ServerMetrics

    metrics = ServerMetrics(registry if registry is not None else CollectorRegistry())
    obs = Observability(metrics=metrics.exposition, on_load=metrics.on_load, server_metrics=metrics)
    if span_exporter is not None or settings.tracing != "off":
        from pinnace.observability.tracing import Tracing, make_exporter

        obs.tracing = Tracing(span_exporter or make_exporter(settings.tracing))
        obs.closers.append(obs.tracing.close)
    access = None
    if settings.access_log:
        access = AccessLog(settings.log_format)
        metrics.registry.register(access)
        obs.closers.insert(0, access.close)
    if settings.payload_log:
        from pinnace.observability.payloads import PayloadLogger

        payloads = PayloadLogger(
            settings.payload_log,
            max_bytes=settings.payload_log_max_bytes,
            backups=settings.payload_log_backups,
            file_tag=f".{os.getpid()}" if settings.workers > 1 else "",
        )
        metrics.registry.register(payloads)
        obs.payloads = payloads
        obs.closers.insert(0, payloads.close)
    obs.observer = metrics if obs.tracing is None else TracedObserver(metrics, obs.tracing)
    obs.listener = ServerListener(metrics, access=access, tracing=obs.tracing)
    return obs

