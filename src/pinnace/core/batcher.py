"""The adaptive batcher: one per served model version, the only way requests reach a model.

Requests wait in a bounded queue. Whenever an execution slot is free (there are
``instances`` of them), the batcher takes the oldest request and every queued request that can
be concatenated with it, up to ``max_batch_size`` rows, and runs them as one batch in the
executor. While all slots are busy, requests accumulate, so batches grow exactly when the model
is the bottleneck and stay small (low latency) when it is not. ``max_queue_delay`` lets a
lone request wait a little for company while a slot is idle.

Everything here runs on the event loop thread except :meth:`Batcher._execute` when a batch
goes to the executor: it touches nothing shared but its own batch. Deadlines fire on the loop: a
request fails at its deadline even while its batch is still running; the batch's late result
is then dropped. Requests are enqueued in deadline order almost always (same timeout, later
arrival), so they share one loop timer, armed for the earliest deadline, instead of one timer
each; a request whose deadline comes before an earlier arrival's gets a timer of its own.

Runtimes that run no user code (``inline_when_fast``: ONNX, not custom Python, which may block
for any time) may run batches on the loop thread itself. A thread hop costs two context
switches and a GIL hand-off, about 30 µs of CPU on a busy core, which is more than a small
model's whole run (a linear classifier: ~7 µs); blocking the loop for under
``_INLINE_BELOW_S`` costs less. What is timed is the model call alone: assembling and
splitting a batch hold the GIL on either thread, so only the model call (which releases it)
could run beside the loop; timing the whole batch sent a fast model with large batches
(concatenating and splitting 40 rows takes longer than running them) to the executor, where
every batch paid the hop. The rules:

* the first batch of unknown cost runs in the executor;
* model calls that take the loop thread longer than ``_INLINE_BELOW_S`` send the next
  batches back to the executor when three come with at most two fast ones between them; a lone
  slow call (a preemption, an interrupt, the host's other guests) is not the model's cost.
  Under load on a shared machine such hiccups come every few hundred batches, and each one
  that sent a fast model to the executor cost every batch a thread hop until it came back.
  One call of ``_LEAVE_AFTER_S`` or more sends them back at once: blocking every connection
  that long is never paid again on the chance that it was a hiccup;
* from the executor, a batch comes back to the loop only when the executor thread's own CPU
  time in the model call was under the threshold. Its wall time cannot decide: on a busy loop
  it includes waits for the GIL. A model that spends little CPU but long waits (a GPU, an
  intra-op thread pool) fails such a try on the loop, so tries back off exponentially, to one
  in ``_MAX_PROBE_GAP`` batches at most; a model busy on the CPU never gets one.

When requests come one at a time (the last batch held one), the batcher is idle and batches
run on the loop, a request runs at once inside :meth:`submit`: a lone client pays no loop
round trip. Requests arriving in the same loop step as that one queue normally and form the
next batch together, and under load (batches of several) every request queues.

Observation costs the hot path little: each request carries the :class:`RequestRecord` of its
task (None when nothing asked for records), filled in when its batch finishes. Statistics and
observers hear of each executed batch once, in the loop step after its results were handed
out, so that their work is never between a request and its answer.
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

import msgspec
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
_Executed = tuple[list[Arrays], float, float, float, float, float]
"""Per-request outputs; when execution began (monotonic); the seconds spent assembling, running
and splitting the batch; for an executor batch, the CPU seconds its thread spent in the model
call (0 inline)."""

log = logging.getLogger(__name__)

_RETRY_AFTER_S: Final = 1.0
_INLINE_BELOW_S: Final = 100e-6
"""A batch whose model call is faster than this may run on the loop thread (see the module
docstring)."""
_SLOW_WEIGHT: Final = 4
_LEAVE_AT: Final = 10
"""Three slow model calls with at most two fast ones between them send a model back to the
executor; a slow call now and then (a preemption, an interrupt, the host) does not."""
_LEAVE_AFTER_S: Final = 5e-3
"""A model call that held the loop thread this long sends the model back to the executor at
once: a hiccup longer than a scheduler's time slice is rare, and a model that slow now and
then (a large batch among small ones) must not keep blocking every other connection."""
_FIRST_PROBE_GAP: Final = 16
_MAX_PROBE_GAP: Final = 1024
"""Executor batches between two tries on the loop thread, after failed tries (doubling)."""


class _Pending(msgspec.Struct):
    """One queued request (a Struct: built in C, a third of a slotted class's cost)."""

    inputs: Arrays
    outputs: Sequence[str]
    rows: int
    key: Hashable
    future: asyncio.Future[Arrays]
    enqueued: float
    deadline: float
    record: RequestRecord | None
    timer: asyncio.TimerHandle | None = None
    """Its own deadline timer, when it could not share the batcher's."""


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
        self._loop: asyncio.AbstractEventLoop | None = None
        """Bound on first use: asyncio.get_running_loop() costs a getpid() system call."""
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._executing = 0
        self._dispatch_scheduled = False
        self._delay_timer: asyncio.TimerHandle | None = None
        self._deadlines: deque[_Pending] = deque()
        """Requests sharing the deadline timer, in deadline order (finished ones linger)."""
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_timer_at = 0.0
        self._drained: asyncio.Future[None] | None = None
        self._closed = False
        self._abandoned = False
        """close() gave up waiting: nothing more runs, every request left has failed."""
        self._running: dict[int, list[_Pending]] = {}
        """The batches in the executor, by id."""
        self._inline = False
        """Run the next batch on the loop thread."""
        self._probe_gap = _FIRST_PROBE_GAP
        self._probe_in = 0
        self._slow_score = 0
        """Recent slow model calls on the loop thread: each adds ``_SLOW_WEIGHT``, each fast
        one takes 1 off; at ``_LEAVE_AT`` batches go back to the executor."""
        self._at_once = True
        """A request finding the batcher idle may run inside submit(); off for the rest of a
        loop step once one has."""
        self._lone = True
        """The last batch held one request: the load is light, requests come one at a time."""

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
        queue = self._queue
        if len(queue) >= self._max_queue:
            # Requests that expired or were cancelled while queued wait no longer: not counted.
            queue = self._drop_finished()
            if len(queue) >= self._max_queue:
                raise ServerBusyError(
                    f"queue full ({self._max_queue} requests waiting)", retry_after=_RETRY_AFTER_S
                )
        loop = self._loop or self._bind_loop()
        future: asyncio.Future[Arrays] = loop.create_future()
        now = time.monotonic()
        deadline = now + timeout_s
        item = _Pending(inputs, outputs, rows, key, future, now, deadline, CURRENT_RECORD.get())
        if (
            self._inline
            and self._at_once
            and self._lone
            and not queue
            and self._free_slots == self._instances
            and self._max_delay <= 0
        ):
            # Idle: run now. Nothing can expire meanwhile (the loop is ours until it returns).
            self._at_once = False
            loop.call_soon(self._allow_at_once)
            self._run_inline([item], now)
            return future
        deadlines = self._deadlines
        if not deadlines or deadline >= deadlines[-1].deadline:
            deadlines.append(item)
            if self._deadline_timer is None or deadline < self._deadline_timer_at:
                self._arm_deadline_timer(loop, deadline, now)
        else:
            item.timer = loop.call_later(timeout_s, _expire, item)
        queue.append(item)
        self._queued_rows += rows
        if not self._dispatch_scheduled:  # checked here: most requests find it scheduled
            self._schedule(loop)
        return future

    async def close(self, grace_s: float) -> None:
        """Refuse new requests, then wait up to ``grace_s`` for queued and running ones."""
        self._closed = True
        if self._queue or self._executing:
            self._drained = (self._loop or self._bind_loop()).create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), grace_s)
            except TimeoutError:
                log.warning("batcher closed with requests still in flight after %.1fs", grace_s)
                self._abandon()
        self._executor.shutdown(wait=False)

    # -- dispatch (event loop thread) -------------------------------------------------------

    def _abandon(self) -> None:
        """The grace ran out: every request still queued or running fails now, rather than at
        its deadline. Nothing more is dispatched (the executor is shut down, the runtime about
        to be unloaded); a running batch's late results are dropped like an expired request's."""
        self._abandoned = True
        waiting = [*self._queue, *(item for batch in self._running.values() for item in batch)]
        self._queue.clear()
        self._queued_rows = 0
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None
        self._fail(waiting, ServerBusyError("model version is being unloaded", retry_after=_RETRY_AFTER_S))

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _allow_at_once(self) -> None:
        self._at_once = True

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
        loop = self._loop
        assert loop is not None, "bound by the submit() that scheduled this"
        self._dispatch_scheduled = False
        if self._delay_timer is not None:
            self._delay_timer.cancel()
            self._delay_timer = None
        if self._abandoned:
            return
        while self._free_slots > 0:
            batch = self._take_batch()
            if not batch:
                break
            started = time.monotonic()
            if self._inline:
                # One batch per loop step: requests read meanwhile join the next one.
                self._run_inline(batch, started)
                break
            self._free_slots -= 1
            self._executing += len(batch)
            self._running[id(batch)] = batch
            done = loop.run_in_executor(self._executor, self._execute, batch, True)
            done.add_done_callback(partial(self._executed, batch=batch, dispatched=started))
        if self._queue:
            self._schedule(loop)
        elif self._free_slots == self._instances and self._drained and not self._drained.done():
            self._drained.set_result(None)  # close() is waiting for the last batch

    def _run_inline(self, batch: list[_Pending], dispatched: float) -> None:
        try:
            executed = self._execute(batch, False)
        except Exception as exc:
            self._fail(batch, exc)  # and back to the executor
            return
        self._complete(batch, executed, dispatched)
        if executed[3] < _INLINE_BELOW_S:  # the model call's time (see the module docstring)
            if self._slow_score:
                self._slow_score -= 1
            else:
                self._probe_gap = _FIRST_PROBE_GAP  # fast for a while: tries start over
            return
        self._slow_score += _LEAVE_AT if executed[3] >= _LEAVE_AFTER_S else _SLOW_WEIGHT
        if self._slow_score >= _LEAVE_AT:
            # Slow calls close together, a very slow one, or a try that failed: back to the
            # executor, and wait longer before the next try.
            self._inline = False
            self._probe_in = self._probe_gap
            self._probe_gap = min(self._probe_gap * 2, _MAX_PROBE_GAP)

    def _executed(
        self, done: asyncio.Future[_Executed], batch: list[_Pending], dispatched: float
    ) -> None:
        """An executor batch finished (on the loop thread, via its future)."""
        self._free_slots += 1
        self._executing -= len(batch)
        del self._running[id(batch)]
        exc = done.exception()
        if exc is not None:
            self._fail(batch, exc)
        else:
            executed = done.result()
            self._complete(batch, executed, dispatched)
            if self._inline_when_fast and executed[5] < _INLINE_BELOW_S:
                if self._probe_in <= 0:
                    # A try: one slow call on the loop thread ends it.
                    self._inline, self._slow_score = True, _LEAVE_AT - _SLOW_WEIGHT
                else:
                    self._probe_in -= 1
        self._dispatch()

    def _drop_finished(self) -> deque[_Pending]:
        """The queue without the requests that expired or were cancelled while queued."""
        live = deque(item for item in self._queue if not item.future.done())
        self._queue = live
        self._queued_rows = sum(item.rows for item in live)
        return live

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
        if kept:
            kept.extend(queue)
            self._queue = kept
        return batch

    def _complete(self, batch: list[_Pending], executed: _Executed, dispatched: float) -> None:
        """Hand each request its rows, then tell statistics and observers. Requests that
        expired (or were abandoned) meanwhile have had their answer: like Triton, statistics
        count only the requests that got their outputs, and the batch as executed."""
        results, started, t_input, t_infer, t_output, _ = executed
        self._lone = len(batch) == 1
        rows = sum(item.rows for item in batch) if len(batch) > 1 else batch[0].rows
        delivered = 0
        compute_s = t_input + t_infer + t_output
        queue_s = []
        records = []
        for item, result in zip(batch, results, strict=True):
            if item.timer is not None:
                item.timer.cancel()
            if item.future.done():
                continue
            item.future.set_result(result)
            delivered += item.rows
            waited = dispatched - item.enqueued
            queue_s.append(waited)
            record = item.record
            if record is not None:  # what the access log and tracing read once it is sent
                record.batch_size = rows
                record.queue_s = waited
                record.compute_s = compute_s
                records.append(record)
        self._forget_finished()
        # Statistics and observers hear of the batch in the next loop step: after the answers
        # have gone out, not before (a lone request's latency is cold, every step costs).
        assert self._loop is not None
        self._loop.call_soon(
            self._account,
            ExecutedBatch(
                rows, delivered, queue_s, dispatched, started, t_input, t_infer, t_output, records
            ),
        )

    def _account(self, batch: ExecutedBatch) -> None:
        self.stats.record_batch(
            batch.rows, batch.delivered, batch.queue_s, batch.t_input, batch.t_infer, batch.t_output
        )
        if self._observer is not None:
            self._observer.on_batch(self.stats.name, self.stats.version, batch)

    def _fail(self, batch: list[_Pending], exc: BaseException) -> None:
        self._inline = False
        error = exc if isinstance(exc, PinnaceError) else _internal(exc)
        for item in batch:
            if item.timer is not None:
                item.timer.cancel()
            if not item.future.done():
                item.future.set_exception(error)
        self._forget_finished()

    # -- deadlines (event loop thread) ------------------------------------------------------

    def _forget_finished(self) -> None:
        """Drop finished requests from the front of the deadline line (batches run oldest
        first, so finished ones are almost all there)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0].future.done():
            deadlines.popleft()

    def _arm_deadline_timer(
        self, loop: asyncio.AbstractEventLoop, deadline: float, now: float
    ) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = loop.call_later(deadline - now, self._expire_due)
        self._deadline_timer_at = deadline

    def _expire_due(self) -> None:
        """The shared timer: fail every request past its deadline, re-arm for the next one."""
        self._deadline_timer = None
        deadlines = self._deadlines
        now = time.monotonic()
        while deadlines:
            item = deadlines[0]
            if not item.future.done():
                if item.deadline > now:
                    assert self._loop is not None
                    self._arm_deadline_timer(self._loop, item.deadline, now)
                    return
                _expire(item)
            deadlines.popleft()

    # -- execution (executor thread, or the loop thread when inline) -------------------------

    def _execute(self, batch: list[_Pending], in_thread: bool) -> _Executed:
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
        cpu0 = time.thread_time() if in_thread else 0.0
        t1 = time.perf_counter()
        outputs = self._run(inputs, wanted)
        t2 = time.perf_counter()
        cpu = time.thread_time() - cpu0 if in_thread else 0.0
        results = _split(batch, outputs, wanted, batched=self._max_batch_size > 0)
        t3 = time.perf_counter()
        return results, started, t1 - t0, t2 - t1, t3 - t2, cpu


def _split(batch: list[_Pending], outputs: Arrays, wanted: list[str], *, batched: bool) -> list[Arrays]:
    """Each request's rows of the outputs it asked for. With batching, every output asked for
    must have a row per input row, whether the batch holds one request or several, so that a
    model's wrong answer never depends on the load; an output nobody asked for is not looked at."""
    lone = len(batch) == 1
    total = batch[0].rows if lone else sum(item.rows for item in batch)
    if batched:
        for name in wanted:
            array = outputs[name]
            if array.ndim == 0 or array.shape[0] != total:
                raise InternalError(
                    f"the model returned {name!r} with shape {list(array.shape)} for a batch of {total} rows"
                )
    if lone:
        result = {}
        for name in batch[0].outputs:
            result[name] = outputs[name]
        return [result]
    results = []
    start = 0
    for item in batch:
        end = start + item.rows
        result = {}
        for name in item.outputs:  # a loop, not a comprehension: no frame per request
            result[name] = outputs[name][start:end]
        results.append(result)
        start = end
    return results


def _expire(item: _Pending) -> None:
    if not item.future.done():
        timeout_s = item.deadline - item.enqueued
        item.future.set_exception(DeadlineExceededError(f"request timed out after {timeout_s:.6g}s"))


def _internal(exc: BaseException) -> InternalError:
    log.error("model execution failed", exc_info=exc)
    return InternalError(f"the model failed: {type(exc).__name__}")
