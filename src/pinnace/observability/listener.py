"""The server's implementations of the hot path's hooks: :class:`ServerListener`, called once
per request by both transports (metrics, access log, span naming), and :class:`TracedObserver`,
told of every batch when tracing is on (without tracing, :class:`ServerMetrics` observes
batches itself: one call fewer per batch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pinnace.core.stats import CURRENT_RECORD, ExecutedBatch, RecordFactory
from pinnace.observability.access import AccessLog
from pinnace.observability.metrics import ServerMetrics

if TYPE_CHECKING:
    from pinnace.observability.tracing import Tracing


class TracedObserver:
    """The :class:`~pinnace.core.stats.InferenceObserver` when tracing is on (otherwise the
    metrics observe batches alone): records carry span contexts, batches become spans."""

    def __init__(self, metrics: ServerMetrics, tracing: Tracing) -> None:
        self._metrics = metrics
        self._tracing = tracing
        self.record_factory: RecordFactory | None = tracing.new_record

    def on_batch(self, model: str, version: str, batch: ExecutedBatch) -> None:
        self._metrics.on_batch(model, version, batch)
        self._tracing.on_batch(model, version, batch)


class ServerListener:
    """The :class:`~pinnace.observability.hooks.RequestListener` both transports call."""

    def __init__(
        self,
        metrics: ServerMetrics,
        *,
        access: AccessLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._metrics = metrics
        self._access = access
        self._tracing = tracing

    def request_finished(
        self,
        protocol: str,
        route: str,
        model: str,
        version: str,
        status: int,
        seconds: float,
        scope: dict[str, Any] | None,
    ) -> None:
        record = CURRENT_RECORD.get()
        if record is not None:
            # The data plane ran: its record names the version actually served. Cleared so that
            # a task serving several requests (a gRPC stream) never reuses it.
            CURRENT_RECORD.set(None)
            self._metrics.on_request(
                protocol, route, record.model, record.version, status, seconds, True
            )
        else:
            label_model, label_version = (
                self._metrics.model_labels(model, version) if model else ("", "")
            )
            self._metrics.on_request(
                protocol, route, label_model, label_version, status, seconds, False
            )
        if self._access is not None:
            self._access.add(protocol, route, model, version, status, seconds, scope, record)
        if self._tracing is not None:
            self._tracing.finish_request(route, status, protocol)
