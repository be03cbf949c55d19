"""Payload logging: a sampled share of a model's requests and responses, for drift and audits.

Opt-in per model (``payload_log: {sample: 0.1}`` in model.yaml); the destination is the
server's (``--payload-log DIR`` or ``--payload-log http://…``). On the event loop a request
costs a random draw and, when sampled, a deque append of references to the already decoded
tensors; a background thread turns them into JSON lines and writes them:

* to ``DIR/<model>.jsonl``, rotated by size (``<model>.jsonl.1`` … ``.N``, oldest dropped), or
* to an HTTP sink, one ``POST`` of ``application/x-ndjson`` per batch of records.

Memory is bounded twice: at most ``max_pending`` records and ``max_pending_bytes`` of tensor
data wait; beyond that records are dropped and counted (``pinnace_payload_log_records_total
{outcome="dropped"}``), never the request. Each line::

    {"ts": "...", "model": "iris", "version": "1", "request_id": "...", "trace_id": null,
     "request": {"id": ..., "parameters": ..., "inputs": [{"name", "datatype", "shape", "data"}]},
     "response": {"parameters": ..., "outputs": [...]}}
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pinnace.core.stats import RequestRecord
from pinnace.errors import InvalidInputError
from pinnace.observability.background import BackgroundWriter
from pinnace.observability.logging import iso_utc
from pinnace.protocol.json_codec import json_data
from pinnace.protocol.types import InferRequest, InferResponse, Tensor

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder().encode
_HTTP_TIMEOUT_S: Final = 5.0


class _Pending(msgspec.Struct, gc=False):
    created: float
    model: str
    version: str
    request: InferRequest
    response: InferResponse
    request_id: str | None
    trace_id: str | None
    nbytes: int


class PayloadLogger(Collector):
    """A :class:`~pinnace.core.stats.PayloadSink` writing JSON lines off the event loop."""

    def __init__(
        self,
        destination: str,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        max_pending: int = 1024,
        max_pending_bytes: int = 64 * 1024 * 1024,
        interval_s: float = 0.2,
        draw: Callable[[], float] = random.random,
        file_tag: str = "",
    ) -> None:
        """``file_tag`` goes into file names (``<model><tag>.jsonl``): processes sharing a
        directory (``serve --workers N``) each need their own files to rotate."""
        if destination.startswith(("http://", "https://")):
            self._sink: _Sink = _HttpSink(destination)
        else:
            self._sink = _FileSink(
                Path(destination), max_bytes=max_bytes, backups=backups, tag=file_tag
            )
        self._draw = draw
        self._max_pending_bytes = max_pending_bytes
        # Each counter has one writer: the loop counts offers and drops, the thread the rest,
        # so no update is lost without a lock.
        self._offered_bytes = 0
        self._written_bytes = 0
        self._dropped: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._writer: BackgroundWriter[_Pending] = BackgroundWriter(
            "pinnace-payload-log", self._write, max_items=max_pending, interval_s=interval_s
        )

    # -- event loop ------------------------------------------------------------------------

    def offer(
        self,
        model: str,
        version: str,
        sample: float,
        request: InferRequest,
        response: InferResponse,
        record: RequestRecord | None,
    ) -> None:
        if sample < 1.0 and self._draw() >= sample:
            return
        nbytes = _nbytes(request.inputs) + _nbytes(response.outputs)
        if self._offered_bytes - self._written_bytes + nbytes > self._max_pending_bytes:
            self._drop(model)
            return
        trace = record.trace if record is not None else None
        item = _Pending(
            time.time(),
            model,
            version,
            request,
            response,
            request.id,
            format(trace.trace_id, "032x") if trace is not None else None,
            nbytes,
        )
        if self._writer.put(item):
            self._offered_bytes += nbytes
        else:
            self._drop(model)

    def _drop(self, model: str) -> None:
        self._dropped[model] = self._dropped.get(model, 0) + 1

    # -- writer thread ---------------------------------------------------------------------

    def _write(self, items: list[_Pending]) -> None:
        lines: dict[str, list[bytes]] = {}
        for item in items:
            lines.setdefault(item.model, []).append(_line(item))
        try:
            for model, batch in lines.items():
                try:
                    self._sink.write(model, batch)
                except Exception as exc:
                    log.warning("payload log for %s failed: %s", model, exc)
                    self._failed[model] = self._failed.get(model, 0) + len(batch)
                else:
                    self._written[model] = self._written.get(model, 0) + len(batch)
        finally:
            self._written_bytes += sum(item.nbytes for item in items)

    # -- lifecycle and metrics -------------------------------------------------------------

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
        self._sink.close()

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "pinnace_payload_log_records",
            "Sampled payload records, by model and outcome (written, dropped, failed).",
            labels=["model", "outcome"],
        )
        for outcome, counts in (
            ("written", self._written), ("dropped", self._dropped), ("failed", self._failed)
        ):
            for model, count in list(counts.items()):
                records.add_metric([model, outcome], float(count))
        yield records
        pending = GaugeMetricFamily(
            "pinnace_payload_log_pending_bytes", "Tensor bytes queued for the payload log."
        )
        pending.add_metric([], float(max(self._offered_bytes - self._written_bytes, 0)))
        yield pending


def _nbytes(tensors: list[Tensor]) -> int:
    total = 0
    for tensor in tensors:
        data = tensor.data
        # Object (BYTES) arrays hold pointers; count their elements' lengths instead.
        total += (
            sum(len(x) for x in data.ravel() if isinstance(x, bytes))
            if data.dtype == object
            else data.nbytes
        )
    return total


def _tensor(tensor: Tensor) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.data.shape),
        "data": json_data(tensor.datatype, tensor.data),
    }


def _line(item: _Pending) -> bytes:
    request, response = item.request, item.response
    doc = {
        "ts": iso_utc(item.created),
        "model": item.model,
        "version": item.version,
        "request_id": item.request_id,
        "trace_id": item.trace_id,
        "request": {
            "id": request.id,
            "parameters": request.parameters,
            "inputs": [_tensor(t) for t in request.inputs],
        },
        "response": {
            "parameters": response.parameters,
            "outputs": [_tensor(t) for t in response.outputs],
        },
    }
    return _encode(doc) + b"\n"


# -- sinks (writer thread only) -------------------------------------------------------------


class _Sink:
    def write(self, model: str, lines: list[bytes]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        return None


class _FileSink(_Sink):
    """``DIR/<model>[tag].jsonl`` per model, rotated when the next write would pass ``max_bytes``."""

    def __init__(self, directory: Path, *, max_bytes: int, backups: int, tag: str = "") -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InvalidInputError(f"payload log directory {str(directory)!r}: {exc.strerror}") from exc
        self._dir = directory
        self._tag = tag
        self._max_bytes = max_bytes
        self._backups = backups
        self._files: dict[str, BinaryIO] = {}
        self._lock = threading.Lock()

    def write(self, model: str, lines: list[bytes]) -> None:
        # Model names match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$: safe as file names.
        with self._lock:
            for line in lines:
                self._handle(model, len(line)).write(line)
            self._files[model].flush()

    def _handle(self, model: str, incoming: int) -> BinaryIO:
        path = self._dir / f"{model}{self._tag}.jsonl"
        handle = self._files.get(model)
        if handle is None:
            handle = self._files[model] = path.open("ab")
        size = handle.tell()  # the file's size: append mode writes only at the end
        if size > 0 and size + incoming > self._max_bytes:
            handle.close()
            self._rotate(path)
            handle = self._files[model] = path.open("ab")
        return handle

    def _rotate(self, path: Path) -> None:
        if self._backups <= 0:
            path.unlink(missing_ok=True)
            return
        for index in range(self._backups - 1, 0, -1):
            older = path.with_name(f"{path.name}.{index}")
            if older.exists():
                older.replace(path.with_name(f"{path.name}.{index + 1}"))
        path.replace(path.with_name(f"{path.name}.1"))

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()


class _HttpSink(_Sink):
    """One POST of newline-delimited JSON per model per batch; no retry (memory stays bounded)."""

    def __init__(self, url: str) -> None:
        import httpx

        self._url = url
        self._client = httpx.Client(timeout=_HTTP_TIMEOUT_S)

    def write(self, model: str, lines: list[bytes]) -> None:
        response = self._client.post(
            self._url,
            content=b"".join(lines),
            headers={"content-type": "application/x-ndjson", "pinnace-model": model},
        )
        response.raise_for_status()

    def close(self) -> None:
        self._client.close()
