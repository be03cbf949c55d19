"""The access log: one line per request on the ``pinnace.access`` logger's level and format.

Each response's facts are queued on the event loop; the loop builds the lines of a
millisecond's responses in one go (:mod:`pinnace.observability.deferred`) and hands the bytes
to a background thread that writes them to standard error, where logging writes
(:mod:`pinnace.observability.background`). Built one by one, right after each response, the
lines cost more: every request's path runs through the HTTP parser, the codec and the model
in between, and the line-building code met cold caches each time. Built on the writer
thread, they cost more again, for each hand-over of the GIL between it and the loop costs
both. Measured under wrk with iris at 64 connections: 27,400 to 27,800 requests a second with
a loop step's lines built in one go, 25,300 to 26,300 one by one. Setting ``pinnace.access=warning`` in
``--log-level`` turns it off like any other logger. Payloads are never logged here.

What repeats for the same path, model and status (the message, the capped fields, their JSON)
is worked out once; for each line, msgspec encodes only the fields that change.

Fields of a JSON line (``null`` where they do not apply)::

    ts level logger message request_id protocol method path route model version status
    outcome duration_ms queue_ms compute_ms batch_size client trace_id
"""

from __future__ import annotations

import itertools
import logging
import secrets
import sys
import time
from collections.abc import Iterator
from typing import Any, Final, TextIO

import msgspec
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from pinnace.core.stats import RequestRecord
from pinnace.observability.background import BackgroundWriter
from pinnace.observability.deferred import Deferred
from pinnace.observability.logging import iso_utc, text_time
from pinnace.observability.metrics import outcome_of

ACCESS_LOGGER: Final = "pinnace.access"
_MAX_FIELD: Final = 256
_MAX_ID: Final = 128
_REPEATED_CACHE_SIZE: Final = 4096

_Item = tuple[float, str, str, str, str, int, float, dict[str, Any] | None, RequestRecord | None]
"""(time, protocol, route, model, version, status, seconds, ASGI scope, record)"""
_encoder = msgspec.json.Encoder()
log = logging.getLogger(__name__)


class _Repeated(msgspec.Struct, gc=False):
    """What a line shares with every line of the same path, model and status."""

    message: str
    model: str | None
    version: str | None
    json_head: bytes
    """The JSON from the end of ``ts`` to the key ``request_id``."""
    json_middle: bytes
    """The JSON from after ``request_id`` to the key ``duration_ms``."""


class _RepeatedFields(msgspec.Struct, gc=False):
    """The JSON fields between ``request_id`` and ``duration_ms``, in line order."""

    protocol: str
    method: str | None
    path: str | None
    route: str
    model: str | None
    version: str | None
    status: int
    outcome: str


class _Varying(msgspec.Struct, gc=False):
    """The JSON fields that end a line, in line order."""

    duration_ms: float
    queue_ms: float | None
    compute_ms: float | None
    batch_size: int | None
    client: str | None
    trace_id: str | None


class AccessLog(Collector):
    """Builds a line for each finished request on the loop, a millisecond's lines at a time; a
    thread writes them to ``stream``."""

    def __init__(
        self,
        fmt: str = "json",
        *,
        stream: TextIO | None = None,
        max_pending: int = 65536,
        interval_s: float = 0.1,
    ) -> None:
        if fmt not in ("json", "text"):
            raise ValueError(f"log format must be json or text, not {fmt!r}")
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._text = fmt == "text"
        self._stream = stream
        # Request ids made here when the client sent none: unique per process, cheap.
        self._id_prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self._repeated: dict[tuple[Any, ...], _Repeated] = {}
        """The parts of a line that repeat, by protocol, method, path, route, model, version
        and status."""
        self._pending: Deferred[_Item] = Deferred(
            "building access log lines", self._build_lines, most=max_pending
        )
        """Requests answered, their lines not built yet."""
        self._failed = False
        """A line has failed to build (logged once)."""
        self._writer: BackgroundWriter[bytes] = BackgroundWriter(
            "pinnace-access-log", self._write, max_items=max_pending, interval_s=interval_s
        )

    @property
    def dropped(self) -> int:
        return self._writer.dropped

    def add(
        self,
        protocol: str,
        route: str,
        model: str,
        version: str,
        status: int,
        seconds: float,
        scope: dict[str, Any] | None,
        record: RequestRecord | None,
    ) -> None:
        """Called on the event loop once per request, after its response: queues its facts,
        for the loop to build its line with the others of the next millisecond. A line built
        while the writer's queue is full is dropped (and counted)."""
        if not self._logger.isEnabledFor(logging.INFO):
            return
        self._pending.add((time.time(), protocol, route, model, version, status, seconds, scope, record))

    def flush(self) -> None:
        self._pending.flush()
        self._writer.flush()

    def collect(self) -> Iterator[Metric]:
        dropped = CounterMetricFamily(
            "pinnace_access_log_dropped", "Access log lines dropped because the writer fell behind."
        )
        dropped.add_metric([], float(self._writer.dropped))
        yield dropped

    def close(self) -> None:
        self._pending.flush()
        self._writer.close()

    def _build_lines(self, items: list[_Item]) -> None:
        build = self._text_line if self._text else self._json_line
        put = self._writer.put
        for item in items:
            try:
                line = build(item)
            except Exception:
                # A line that cannot be built must not fail the lines after it, nor anything
                # else the loop runs: it is lost, and said so once.
                if not self._failed:
                    self._failed = True
                    log.exception("an access log line could not be built; such lines are skipped")
                continue
            put(line)

    def _write(self, lines: list[bytes]) -> None:
        """On the writer thread: the queued lines, in one write."""
        stream = self._stream or sys.stderr
        stream.write((b"\n".join(lines) + b"\n").decode())
        stream.flush()

    def _parts(self, item: _Item) -> tuple[_Repeated, str, _Varying]:
        """A line's parts: what repeats, the request id, and the fields that change."""
        _, protocol, route, model, version, status, seconds, scope, record = item
        method = path = client = request_id = trace_id = None
        if scope is not None:
            method, path, client = scope.get("method"), scope.get("path", ""), scope.get("client")
            request_id, trace_id = _ids_from(scope.get("headers"))
        if record is not None:
            model, version = record.model, record.version
            if request_id is None and record.request_id:
                request_id = _cap(record.request_id, _MAX_ID)
            if record.trace is not None:
                trace_id = format(record.trace.trace_id, "032x")
        key = (protocol, method, path, route, model, version, status)
        repeated = self._repeated.get(key)
        if repeated is None:
            if len(self._repeated) >= _REPEATED_CACHE_SIZE:
                self._repeated.clear()
            repeated = self._repeated[key] = _repeats(key)
        queue_ms = compute_ms = batch_size = None
        if record is not None and record.batch_size > 0:  # it ran in a batch
            queue_ms, compute_ms, batch_size = _ms(record.queue_s), _ms(record.compute_s), record.batch_size
        client_text = f"{client[0]}:{client[1]}" if client else None
        varying = _Varying(_ms(seconds), queue_ms, compute_ms, batch_size, client_text, trace_id)
        return repeated, request_id or f"{self._id_prefix}-{next(self._ids):x}", varying

    def _json_line(self, item: _Item) -> bytes:
        repeated, request_id, varying = self._parts(item)
        return b"".join(
            (
                b'{"ts":"',
                iso_utc(item[0]).encode(),
                repeated.json_head,
                _encoder.encode(request_id),
                repeated.json_middle,
                _encoder.encode(varying)[1:],  # without its "{": the line's object goes on
            )
        )

    def _text_line(self, item: _Item) -> bytes:
        repeated, request_id, varying = self._parts(item)
        words = [
            text_time(item[0]),
            "INFO   ",
            f"{ACCESS_LOGGER}:",
            _printable(repeated.message),
            f"{varying.duration_ms}ms",
            f"id={_printable(request_id)}",
        ]
        named = (
            ("model", repeated.model),
            ("version", repeated.version),
            ("batch_size", varying.batch_size),
            ("queue_ms", varying.queue_ms),
            ("compute_ms", varying.compute_ms),
            ("trace_id", varying.trace_id),
        )
        words += (f"{name}={_printable(str(value))}" for name, value in named if value is not None)
        return " ".join(words).encode()


def _repeats(key: tuple[Any, ...]) -> _Repeated:
    protocol, method, path, route, model, version, status = key
    path = _cap(path, _MAX_FIELD) if path is not None else None
    model = _cap(model, _MAX_FIELD) or None
    version = _cap(version, _MAX_FIELD) or None
    message = f"{method} {path} {status}" if method else f"{route} {status}"
    fields = _RepeatedFields(protocol, method, path, route, model, version, status, outcome_of(protocol, status))
    return _Repeated(
        message,
        model,
        version,
        f'","level":"info","logger":"{ACCESS_LOGGER}","message":'.encode()
        + _encoder.encode(message)
        + b',"request_id":',
        b"," + _encoder.encode(fields)[1:-1] + b",",  # the fields without their braces
    )


def _ms(seconds: float) -> float:
    """Milliseconds to the microsecond (``round(x, 3)`` takes three times as long)."""
    return round(seconds * 1e6) / 1000


def _ids_from(headers: list[tuple[bytes, bytes]] | None) -> tuple[str | None, str | None]:
    """(X-Request-Id, the trace id of a W3C ``traceparent``), in one pass over the headers.
    The trace id is logged even when tracing is off."""
    request_id = trace_id = None
    for key, value in headers or ():
        if key == b"x-request-id":
            request_id = _cap(value.decode("latin-1").strip(), _MAX_ID) or None
        elif key == b"traceparent":
            parts = value.decode("latin-1").strip().split("-")
            if len(parts) >= 4 and len(parts[1]) == 32 and _is_hex(parts[1]) and parts[1] != "0" * 32:
                trace_id = parts[1].lower()
    return request_id, trace_id


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
    except ValueError:
        return False
    return True


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _printable(text: str) -> str:
    """Text lines must stay one line: control characters are escaped (no log injection)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
