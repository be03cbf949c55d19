"""OpenTelemetry tracing: imported only when tracing is on, so it costs nothing when off.

Spans of one REST inference request::

    POST /v2/models/{model}/infer      SERVER, parent = the caller's W3C ``traceparent``
    ├── pinnace.queue_wait             time in the batcher's queue
    └── pinnace.batch                  one model execution; links to every request it served
        └── pinnace.inference          the runtime's own compute (inputs assembled)

A batch serves several requests, each with its own trace: the batch span is a child of the
first request's span and *links* to all of them, so every trace shows where its request was
computed. Batch and queue spans are made after the fact (on the event loop, once the batch
finished) from the times the batcher measured, so no span work happens on executor threads.

No global state: the tracer provider and the W3C propagator are this module's own, not
OpenTelemetry's process-wide defaults. Exporters: ``console`` (stdout), ``otlp`` (the OTLP/HTTP
exporter, configured by the standard ``OTEL_EXPORTER_OTLP_*`` variables; needs
``opentelemetry-exporter-otlp-proto-http``), or any ``SpanExporter`` handed in (tests use the
in-memory one). Sampling follows ``OTEL_TRACES_SAMPLER`` (parent-based always-on by default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pinnace.core.stats import ExecutedBatch, RequestRecord
from pinnace.errors import InvalidInputError

ASGIApp = Any


def make_exporter(mode: str) -> SpanExporter:
    """The exporter ``--tracing MODE`` names."""
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if mode == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise InvalidInputError(
                "--tracing otlp needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http"
            ) from exc
        return OTLPSpanExporter()
    raise InvalidInputError(f"tracing must be off, console or otlp, not {mode!r}")


class Tracing:
    """The tracer of one process, its hooks for the hot path, and an ASGI middleware."""

    def __init__(self, exporter: SpanExporter) -> None:
        service = os.environ.get("OTEL_SERVICE_NAME", "pinnace")
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        # Batching export keeps serialisation and I/O on the processor's thread.
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("pinnace")
        self.propagator = TraceContextTextMapPropagator()

    # -- transport side --------------------------------------------------------------------

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Wrap an ASGI app: one SERVER span per HTTP request, child of its ``traceparent``."""
        return _TracingMiddleware(app, self)

    @contextmanager
    def server_span(self, name: str, carrier: MutableMapping[str, str]) -> Iterator[Any]:
        """A SERVER span made current for the block, e.g. around a gRPC call whose metadata
        (``carrier``) may hold ``traceparent``."""
        parent = self.propagator.extract(carrier)
        span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield span
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def finish_request(self, route: str, status: int, protocol: str) -> None:
        """Name the current request span after its route template, once the route is known."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        if protocol == "grpc":
            span.update_name(route)
            span.set_attribute("rpc.method", route)
            return
        method = getattr(span, "attributes", {}).get("http.request.method", "")
        span.update_name(f"{method} {route}".strip())
        span.set_attribute("http.route", route)

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Write the current span's ``traceparent`` into outgoing ``headers`` (propagation)."""
        self.propagator.inject(headers)

    # -- hot path side (event loop) --------------------------------------------------------

    def new_record(self, model: str, version: str, request_id: str | None) -> RequestRecord:
        """A request record carrying the current span's context (None outside any span)."""
        context = trace.get_current_span().get_span_context()
        return RequestRecord(
            model, version, request_id, trace=context if context.is_valid else None
        )

    def on_batch(self, model: str, version: str, batch: ExecutedBatch) -> None:
        traced = [r for r in batch.records if r.trace is not None]
        if not traced:
            return
        to_ns = _clock()
        attributes = {"pinnace.model": model, "pinnace.model_version": version}
        for record in traced:
            parent = trace.set_span_in_context(NonRecordingSpan(record.trace))
            span = self.tracer.start_span(
                "pinnace.queue_wait",
                context=parent,
                attributes=attributes,
                start_time=to_ns(batch.dispatched - record.queue_s),
            )
            span.end(end_time=to_ns(batch.dispatched))
        first = trace.set_span_in_context(NonRecordingSpan(traced[0].trace))
        batch_span = self.tracer.start_span(
            "pinnace.batch",
            context=first,
            links=[Link(r.trace) for r in traced],
            attributes={
                **attributes,
                "pinnace.batch.rows": batch.rows,
                "pinnace.batch.requests": len(batch.queue_s),
            },
            start_time=to_ns(batch.dispatched),
        )
        computed = batch.started + batch.t_input
        inference = self.tracer.start_span(
            "pinnace.inference",
            context=trace.set_span_in_context(batch_span),
            attributes=attributes,
            start_time=to_ns(computed),
        )
        inference.end(end_time=to_ns(computed + batch.t_infer))
        batch_span.end(end_time=to_ns(batch.started + batch.compute_s))

    def close(self) -> None:
        self.provider.shutdown()


def _clock() -> Any:
    """Converts ``time.monotonic()`` readings to epoch nanoseconds, as spans want them."""
    now_ns, now = time.time_ns(), time.monotonic()

    def to_ns(monotonic: float) -> int:
        return now_ns - int((now - monotonic) * 1e9)

    return to_ns


class _TracingMiddleware:
    """One SERVER span per HTTP request, current while the app runs."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self._tracing = tracing

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in (b"traceparent", b"tracestate")
        }
        parent = self._tracing.propagator.extract(carrier) if carrier else None
        method = scope.get("method", "")
        span = self._tracing.tracer.start_span(
            method,  # renamed to "METHOD /route/{template}" once the app knows the route
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope.get("path", "")[:256]},
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        status = 0  # stays 0 when the client left before any answer

        async def send_watching(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_watching)
        finally:
            otel_context.detach(token)
            if status:
                span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
