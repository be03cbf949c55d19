"""Per-model-version statistics in the shape Triton reports them, and the hooks observers use.

:class:`ModelStats` serialises to exactly the JSON of Triton's statistics extension
(``GET /v2/models/{m}/stats``), so ``tritonclient`` and Triton's tools read it. Counters are
plain integers updated on the event loop thread only, so they need no locks.

Observability (metrics, access log, tracing, payload log) is handed in through three small
interfaces so that ``core`` imports no metrics or tracing library:

* :class:`InferenceObserver` is told of every executed batch;
* :class:`RequestRecord` is what the hot path measured for one request. The data plane makes
  one per inference (only when an observer asks for them) and keeps it in :data:`CURRENT_RECORD`
  for the rest of the request's task, where the batcher fills it in and the transport's
  listener reads it, so no signature between transport, data plane and batcher has to change;
* :class:`PayloadSink` is offered the requests and responses of models that opted in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

import msgspec

from pinnace.protocol.types import InferRequest, InferResponse


class Duration(msgspec.Struct):
    """Triton's ``StatisticDuration``: a count and a cumulative duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


class BatchStat(msgspec.Struct):
    """Triton's ``InferBatchStatistics``: executions of one batch size (rows)."""

    batch_size: int
    compute_input: Duration = msgspec.field(default_factory=Duration)
    compute_infer: Duration = msgspec.field(default_factory=Duration)
    compute_output: Duration = msgspec.field(default_factory=Duration)


class InferenceStats(msgspec.Struct):
    """Triton's ``InferStatistics``. Counts are requests; durations are summed per request
    (a request in a batch of 8 adds the whole batch's compute time, as Triton does)."""

    success: Duration = msgspec.field(default_factory=Duration)
    fail: Duration = msgspec.field(default_factory=Duration)
    queue: Duration = msgspec.field(default_factory=Duration)
    compute_input: Duration = msgspec.field(default_factory=Duration)
    compute_infer: Duration = msgspec.field(default_factory=Duration)
    compute_output: Duration = msgspec.field(default_factory=Duration)
    # pinnace has no response cache; the fields are present (always zero) because Triton's
    # tools read them.
    cache_hit: Duration = msgspec.field(default_factory=Duration)
    cache_miss: Duration = msgspec.field(default_factory=Duration)


class ModelStats(msgspec.Struct, dict=True):
    """Triton's ``ModelStatistics`` for one version, counted since it loaded.

    ``inference_count`` counts rows (a request of 8 rows adds 8), ``execution_count`` counts
    model executions (batches). ``dict=True`` lets the batch-size index live beside the fields
    without being serialised.
    """

    name: str
    version: str
    last_inference: int = 0
    """Milliseconds since the epoch of the last execution."""
    inference_count: int = 0
    execution_count: int = 0
    inference_stats: InferenceStats = msgspec.field(default_factory=InferenceStats)
    batch_stats: list[BatchStat] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_size: dict[int, BatchStat] = {s.batch_size: s for s in self.batch_stats}

    def record_batch(
        self,
        rows: int,
        delivered: int,
        queue_s: list[float],
        t_input: float,
        t_infer: float,
        t_output: float,
    ) -> None:
        """One successful execution of ``rows`` rows, which answered ``len(queue_s)`` requests
        holding ``delivered`` rows (the others had expired meanwhile)."""
        # Runs once per batch on the loop thread: plain field updates, not Duration.add calls.
        n = len(queue_s)
        self.execution_count += 1
        self.inference_count += delivered
        self.last_inference = time.time_ns() // 1_000_000
        ns_input, ns_infer, ns_output = int(t_input * 1e9), int(t_infer * 1e9), int(t_output * 1e9)
        s = self.inference_stats
        s.queue.count += n
        s.queue.ns += int(sum(queue_s) * 1e9)
        for total, ns in (
            (s.compute_input, ns_input), (s.compute_infer, ns_infer), (s.compute_output, ns_output)
        ):
            total.count += n
            total.ns += ns * n
        stat = self._by_size.get(rows)
        if stat is None:
            stat = self._by_size[rows] = BatchStat(batch_size=rows)
            self.batch_stats.append(stat)
        stat.compute_input.count += 1
        stat.compute_input.ns += ns_input
        stat.compute_infer.count += 1
        stat.compute_infer.ns += ns_infer
        stat.compute_output.count += 1
        stat.compute_output.ns += ns_output


class RequestRecord(msgspec.Struct, gc=False):
    """What one inference request went through, filled in along the hot path.

    Made by the data plane when an observer wants records, filled in by the batcher, read by
    the transport's listener (access log, metrics) once the response is sent.
    """

    model: str
    version: str
    request_id: str | None = None
    """The V2 request ``id``, when the client sent one."""
    batch_size: int = 0
    """Rows in the batch this request ran in (0: it never ran)."""
    queue_s: float = 0.0
    compute_s: float = 0.0
    trace: Any = None
    """The tracing span context of the request, when tracing is on."""


CURRENT_RECORD: ContextVar[RequestRecord | None] = ContextVar("pinnace_request_record", default=None)
"""The record of the request the current task is serving, if any."""

RecordFactory = Callable[[str, str, str | None], RequestRecord]
"""Makes a record from (model, version, request id)."""


class ExecutedBatch(msgspec.Struct, gc=False):
    """One successful model execution, as observers see it. Times are ``time.monotonic()``."""

    rows: int
    """The rows the model ran."""
    delivered: int
    """The rows of the requests that got their outputs (the others expired meanwhile)."""
    queue_s: list[float]
    """Per request that got its outputs, the time it waited in the queue."""
    dispatched: float
    """When the batch left the queue."""
    started: float
    """When an executor thread began to run it."""
    t_input: float
    t_infer: float
    t_output: float
    records: list[RequestRecord]
    """The records of the batch's requests (empty when records are off)."""

    @property
    def compute_s(self) -> float:
        return self.t_input + self.t_infer + self.t_output


class InferenceObserver(Protocol):
    """Receives what the hot path measured; implemented by observability, handed in."""

    record_factory: RecordFactory | None
    """Makes one :class:`RequestRecord` per inference; None: the data plane makes none."""

    def on_batch(self, model: str, version: str, batch: ExecutedBatch) -> None: ...


class NullObserver:
    """An observer that observes nothing and asks for no records."""

    record_factory: RecordFactory | None = None

    def on_batch(self, model: str, version: str, batch: ExecutedBatch) -> None:
        return None


class PayloadSink(Protocol):
    """Takes sampled requests and responses of models whose manifest opts in (``payload_log``).

    ``offer`` runs on the event loop: it decides, queues and returns; writing happens elsewhere.
    """

    def offer(
        self,
        model: str,
        version: str,
        sample: float,
        request: InferRequest,
        response: InferResponse,
        record: RequestRecord | None,
    ) -> None: ...
