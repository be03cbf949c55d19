"""The adaptive batcher: one per served model version, the only way requests reach a model.

Requests wait in a bounded queue. Whenever an execution slot is free (there are
``instances`` of them), the batcher takes the oldest request and every queued request that can
be concatenated with it, up to ``max_batch_size`` rows, and runs them as one batch in the
executor. While all slots are busy, requests accumulate, so batches grow exactly when the model
is the bottleneck and stay small (low latency) when it is not. ``max_queue_delay`` lets a
lone request wait a little for company while a slot is idle.

Everything here runs on the event loop thread except :meth:`Batcher._execute`, which runs in
the executor and touches nothing shared but its own batch. Deadlines are timers on the loop:
a request fails at its deadline even while its batch is still running; the batch's late result
is then dropped.

One exception to the executor, for runtimes that run no user code (``inline_when_fast``:
ONNX, not custom Python, which may block for any time): when the previous batch took less than
``_INLINE_BELOW_S`` (a small model such as a linear classifier), the next one runs on the loop
thread itself. A thread hop costs two context switches and a GIL hand-off, about 30 µs of CPU
on a busy core, which is more than such a model's whole run; blocking the loop for under
100 µs costs less. The first batch, and every batch after a slow one, goes to the executor, so
a slow model does not run on the loop (its deadlines keep firing on time).

Observation costs the hot path little: each request carries the :class:`RequestRecord` of its
task (None when nothing asked for records), filled in when its batch finishes; observers hear
of each executed batch once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Final

import numpy as np

from pinnace.core.stats import (
    CURRENT_RECORD,
    ExecutedBatch,
    InferenceObserver,
    ModelStats,
    RequestRecord,
)
from pinnace.errors import (
    DeadlineExceededError,
    InternalError,
    PinnaceError,
    ServerBusyError,
)

Arrays = dict[str, np.ndarray]
RunFn = Callable[[Arrays, Sequence[str]], Arrays]
_Executed = tuple[list[Arrays], float, float, float, float]
"""Per-request outputs; when execution began (monotonic); the seconds spent assembling, running
and splitting the batch."""

log = logging.getLogger(__name__)

_RETRY_AFTER_S: Final = 1.0
_INLINE_BELOW_S: Final = 100e-6
"""A batch that took less than this lets the next one run on the loop thread (see above)."""


class _Pending:
    """One queued request."""

    __slots__ = ("enqueued", "future", "inputs", "key", "outputs", "record", "rows", "timer")

    def __init__(
        self,
        inputs: Arrays,
        outputs: Sequence[str],
        rows: int,
        key: Hashable,
        future: asyncio.Future[Arrays],
        timer: asyncio.TimerHandle,
        record: RequestRecord | None,
    ) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.rows = rows
        self.key = key
        self.future = future
        self.record = record
        self.enqueued = time.monotonic()
        self.timer = timer


class Batcher:
    """Queue, batch and execute requests for one model version."""

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        *,
        instances: int,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        stats: ModelStats,
        observer: InferenceObserver | None = None,
        inline_when_fast: bool = False,
    ) -> None:
        self._run = run
        self._executor = executor
        self._free_slots = instances
        self._instances = instances
        self._max_batch_size = max_batch_size
        self._max_delay = max_queue_delay_s
        self._max_queue = max_queue_size
        self.stats = stats
        self._observer = observer
        self._inline_when_fast = inline_when_fast
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._executing = 0
        self._dispatch_scheduled = False
        self._delay_timer: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._inline = False
        """Run the next batch on the loop thread: the last one was faster than a thread hop."""

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def busy_slots(self) -> int:
        return self._instances - self._free_slots

    @property
    def in_flight(self) -> int:
        """Requests queued or executing (expired ones still queued included)."""
        return len(self._queue) + self._executing

    def submit(
        self, inputs: Arrays, outputs: Sequence[str], *, rows: int, key: Hashable, timeout_s: float
    ) -> asyncio.Future[Arrays]:
        """Queue one request; the future holds its outputs, or fails at ``timeout_s`` seconds.

        ``rows`` is the request's size along the batch axis (1 when batching is off); ``key``
        says which requests may share a batch (same input names, dtypes and inner shapes).
        A plain function returning the future, not a coroutine: one suspended frame less
        per request on the hot path.
        """
        if self._closed:
            raise ServerBusyError("model version is being unloaded", retry_after=_RETRY_AFTER_S)
        if len(self._queue) >= self._max_queue:
            raise ServerBusyError(
                f"queue full ({self._max_queue} requests waiting)", retry_after=_RETRY_AFTER_S
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        timer = loop.call_later(timeout_s, _expire, future, timeout_s)
        item = _Pending(inputs, outputs, rows, key, future, timer, CURRENT_RECORD.get())
        self._queue.append(item)
        self._queued_rows += rows
        self._idle.clear()
        self._schedule(loop)
        return future

    async def close(self, grace_s: float) -> None:
        """Refuse new requests, then wait up to ``grace_s`` for queued and running ones."""
        self._closed = True
        try:
            await asyncio.wait_for(self._idle.wait(), grace_s)
        except TimeoutError:
            log.warning("batcher closed with requests still in flight after %.1fs", grace_s)
        self._executor.shutdown(wait=False)

    # -- dispatch (event loop thread) -------------------------------------------------------

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._free_slots == 0 or self._dispatch_scheduled:
            return
        if self._max_delay > 0 and self._queued_rows < max(self._max_batch_size, 1):
            # A slot is idle but the batch is not full: give the oldest request up to
            # max_queue_delay to gather company.
            if self._delay_timer is None:
                wait = self._queue[0].enqueued + self._max_delay - time.monotonic()
                self._delay_timer = loop.call_later(max(wait, 0.0), self._dispatch)
            return
        # call_soon rather than dispatching inline: requests that arrive in the same loop
        # iteration join this batch.
        self._dispatch_scheduled = True
        loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_scheduled = False
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None
        loop = asyncio.get_running_loop()
        while self._free_slots > 0:
            batch = self._take_batch()
            if not batch:
                break
            self._free_slots -= 1
            self._executing += len(batch)
            started = time.monotonic()
            queue_times = [started - item.enqueued for item in batch]
            if self._inline:
                done: asyncio.Future[_Executed] = loop.create_future()
                try:
                    done.set_result(self._execute(batch))
                except Exception as exc:
                    done.set_exception(exc)
            else:
                done = loop.run_in_executor(self._executor, self._execute, batch)
            done.add_done_callback(
                partial(self._finish, batch=batch, queue_s=queue_times, dispatched=started)
            )
        if self._queue:
            self._schedule(loop)
        elif self._free_slots == self._instances:
            self._idle.set()

    def _take_batch(self) -> list[_Pending]:
        """The oldest live request plus every compatible one that fits, in queue order."""
        queue = self._queue
        while queue and queue[0].future.done():  # expired while queued
            self._queued_rows -= queue.popleft().rows
        if not queue:
            return []
        first = queue.popleft()
        self._queued_rows -= first.rows
        batch = [first]
        if self._max_batch_size <= 1:
            return batch
        rows = first.rows
        kept: deque[_Pending] = deque()
        while queue and rows < self._max_batch_size:
            item = queue.popleft()
            if item.future.done():
                self._queued_rows -= item.rows
            elif item.key == first.key and rows + item.rows <= self._max_batch_size:
                batch.append(item)
                rows += item.rows
                self._queued_rows -= item.rows
            else:
                kept.append(item)
        kept.extend(queue)
        self._queue = kept
        return batch

    def _finish(
        self,
        done: asyncio.Future[_Executed],
        batch: list[_Pending],
        queue_s: list[float],
        dispatched: float,
    ) -> None:
        self._free_slots += 1
        self._executing -= len(batch)
        exc = done.exception()
        if exc is None:
            results, started, t_input, t_infer, t_output = done.result()
            self._inline = (
                self._inline_when_fast and t_input + t_infer + t_output < _INLINE_BELOW_S
            )
            rows = 0
            for item, result in zip(batch, results, strict=True):
                rows += item.rows
                item.timer.cancel()
                if not item.future.done():
                    item.future.set_result(result)
            self.stats.record_batch(rows, queue_s, t_input, t_infer, t_output)
            records = _fill_records(batch, queue_s, rows, t_input + t_infer + t_output)
            if self._observer is not None:
                self._observer.on_batch(
                    self.stats.name,
                    self.stats.version,
                    ExecutedBatch(
                        rows, queue_s, dispatched, started, t_input, t_infer, t_output, records
                    ),
                )
        else:
            self._inline = False
            error = exc if isinstance(exc, PinnaceError) else _internal(exc)
            for item in batch:
                item.timer.cancel()
                if not item.future.done():
                    item.future.set_exception(error)
        self._dispatch()

    # -- execution (executor thread) --------------------------------------------------------

    def _execute(self, batch: list[_Pending]) -> _Executed:
        started = time.monotonic()
        t0 = time.perf_counter()
        if len(batch) == 1:
            inputs = batch[0].inputs
            wanted = list(batch[0].outputs)
        else:
            inputs = {
                name: np.concatenate([item.inputs[name] for item in batch])
                for name in batch[0].inputs
            }
            wanted = list(dict.fromkeys(name for item in batch for name in item.outputs))
        t1 = time.perf_counter()
        outputs = self._run(inputs, wanted)
        t2 = time.perf_counter()
        results = _split(batch, outputs, batched=self._max_batch_size > 0)
        t3 = time.perf_counter()
        return results, started, t1 - t0, t2 - t1, t3 - t2


def _fill_records(
    batch: list[_Pending], queue_s: list[float], rows: int, compute_s: float
) -> list[RequestRecord]:
    """Tell each request's record what its batch measured; returns the records."""
    records = []
    for item, waited in zip(batch, queue_s, strict=True):
        record = item.record
        if record is not None:
            record.batch_size = rows
            record.queue_s = waited
            record.compute_s = compute_s
            records.append(record)
    return records


def _split(batch: list[_Pending], outputs: Arrays, *, batched: bool) -> list[Arrays]:
    if len(batch) == 1:
        only = batch[0]
        return [{name: outputs[name] for name in only.outputs}]
    total = sum(item.rows for item in batch)
    for name, array in outputs.items():
        if not batched or array.ndim == 0 or array.shape[0] != total:
            raise InternalError(
                f"the model returned {name!r} with shape {list(array.shape)} for a batch of {total} rows"
            )
    results = []
    start = 0
    for item in batch:
        end = start + item.rows
        results.append({name: outputs[name][start:end] for name in item.outputs})
        start = end
    return results


def _expire(future: asyncio.Future[Arrays], timeout_s: float) -> None:
    if not future.done():
        future.set_exception(DeadlineExceededError(f"request timed out after {timeout_s:g}s"))


def _internal(exc: BaseException) -> InternalError:
    log.error("model execution failed", exc_info=exc)
    return InternalError(f"the model failed: {type(exc).__name__}")
