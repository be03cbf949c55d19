"""The adaptive batcher's semantics, in-process with a real thread pool and a gated model.

The model is a function that records every batch it is given and can be held (a gate) so that
a test decides exactly what is queued while the single execution slot is busy. No test
asserts a duration: each checks who got what, which batches formed, and which error arrived
while the batch was still running.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pinnace.core.batcher import Arrays, Batcher, RunFn
from pinnace.core.stats import ModelStats
from pinnace.errors import DeadlineExceededError, InternalError, ServerBusyError

WAIT_S = 10.0
"""Upper bound for any wait in these tests (never reached when things work)."""


class GatedModel:
    """``y = 2x`` for every input, recording each batch; holds while the gate is closed."""

    def __init__(self) -> None:
        self.batches: list[dict[str, tuple[int, ...]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        self.batches.append({name: a.shape for name, a in inputs.items()})
        self.entered.set()
        if not self.gate.wait(WAIT_S):
            raise RuntimeError("the test never opened the gate")
        return {f"y_{name}": a * 2 for name, a in inputs.items() if f"y_{name}" in outputs}


@pytest.fixture
def model() -> GatedModel:
    return GatedModel()


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1)
    yield pool
    pool.shutdown(wait=False, cancel_futures=True)


def make_batcher(
    model: RunFn,
    executor: ThreadPoolExecutor,
    *,
    max_batch_size: int = 64,
    max_queue_size: int = 100,
    max_queue_delay_s: float = 0.0,
    inline_when_fast: bool = False,
) -> Batcher:
    return Batcher(
        model,
        executor,
        instances=1,
        max_batch_size=max_batch_size,
        max_queue_delay_s=max_queue_delay_s,
        max_queue_size=max_queue_size,
        stats=ModelStats(name="m", version="1"),
        inline_when_fast=inline_when_fast,
    )


def rows(value: float, count: int = 1, width: int = 3) -> np.ndarray:
    return np.full((count, width), value, dtype=np.float32)


def submit(batcher: Batcher, x: np.ndarray, timeout_s: float = WAIT_S) -> asyncio.Future[Arrays]:
    key = (("x", x.dtype.str, x.shape[1:]),)
    return batcher.submit({"x": x}, ["y_x"], rows=x.shape[0], key=key, timeout_s=timeout_s)


async def occupy_slot(batcher: Batcher, model: GatedModel) -> asyncio.Future[Arrays]:
    """Start one request and hold it inside the model, so that later ones queue up."""
    model.gate.clear()
    first = submit(batcher, rows(-1.0))
    assert await asyncio.to_thread(model.entered.wait, WAIT_S)
    return first


async def test_queued_requests_form_one_batch_and_each_gets_its_own_rows(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor)
    first = await occupy_slot(batcher, model)
    # Sizes 1, 2, 3, ... so that a mix-up between requesters changes shapes, not just values.
    waiting = [submit(batcher, rows(float(i), count=i)) for i in range(1, 9)]
    await asyncio.sleep(0)
    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *waiting), WAIT_S)

    assert [b["x"] for b in model.batches] == [(1, 3), (sum(range(1, 9)), 3)]
    assert np.array_equal(results[0]["y_x"], rows(-2.0))
    for i, result in enumerate(results[1:], start=1):
        assert np.array_equal(result["y_x"], rows(2.0 * i, count=i)), f"request {i}"
    assert batcher.queue_depth == 0


async def test_a_batch_never_exceeds_max_batch_size(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor, max_batch_size=4)
    first = await occupy_slot(batcher, model)
    waiting = [submit(batcher, rows(float(i))) for i in range(10)]
    await asyncio.sleep(0)
    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *waiting), WAIT_S)

    assert [b["x"][0] for b in model.batches] == [1, 4, 4, 2]
    for i, result in enumerate(results[1:]):
        assert result["y_x"][0, 0] == 2.0 * i


async def test_mixed_shapes_run_in_separate_batches(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor)
    first = await occupy_slot(batcher, model)
    narrow = [submit(batcher, rows(float(i), width=3)) for i in range(3)]
    wide = [submit(batcher, rows(10.0 + i, width=5)) for i in range(3)]
    interleaved = [submit(batcher, rows(20.0, width=3)), submit(batcher, rows(30.0, width=5))]
    await asyncio.sleep(0)
    model.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *narrow, *wide, *interleaved), WAIT_S)

    shapes = [b["x"] for b in model.batches[1:]]
    # Oldest first: every width-3 request batches together, then every width-5 one.
    assert shapes == [(4, 3), (4, 5)]
    for i, task in enumerate(narrow):
        assert np.array_equal(task.result()["y_x"], rows(2.0 * i, width=3))
    for i, task in enumerate(wide):
        assert np.array_equal(task.result()["y_x"], rows(20.0 + 2 * i, width=5))
    assert interleaved[0].result()["y_x"][0, 0] == 40.0
    assert interleaved[1].result()["y_x"][0, 0] == 60.0


async def test_without_batching_each_request_runs_alone(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor, max_batch_size=0)
    first = await occupy_slot(batcher, model)
    waiting = [submit(batcher, rows(float(i))) for i in range(4)]
    await asyncio.sleep(0)
    model.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *waiting), WAIT_S)
    assert [b["x"] for b in model.batches] == [(1, 3)] * 5


async def test_a_full_queue_refuses_at_once_with_retry_after(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor, max_queue_size=2)
    first = await occupy_slot(batcher, model)
    queued = [submit(batcher, rows(1.0)), submit(batcher, rows(2.0))]
    await asyncio.sleep(0)
    assert batcher.queue_depth == 2

    with pytest.raises(ServerBusyError) as refused:
        await submit(batcher, rows(3.0))
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    assert not model.gate.is_set(), "refused while the batch was still running"

    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *queued), WAIT_S)
    assert [r["y_x"][0, 0] for r in results] == [-2.0, 2.0, 4.0]
    # Room again: the batcher keeps serving after a refusal.
    again = await asyncio.wait_for(submit(batcher, rows(5.0)), WAIT_S)
    assert again["y_x"][0, 0] == 10.0


@pytest.mark.parametrize("how", ["expired", "cancelled"])
async def test_requests_no_longer_waiting_leave_room_in_a_full_queue(
    model: GatedModel, executor: ThreadPoolExecutor, how: str
) -> None:
    batcher = make_batcher(model, executor, max_queue_size=2)
    first = await occupy_slot(batcher, model)
    gone = [submit(batcher, rows(1.0), timeout_s=0.05), submit(batcher, rows(2.0), timeout_s=0.05)]
    if how == "cancelled":
        for future in gone:
            future.cancel()
    await asyncio.wait(gone)
    for future in gone:
        assert future.cancelled() or isinstance(future.exception(), DeadlineExceededError)
    admitted = submit(batcher, rows(3.0))  # the queue holds two requests, neither waiting
    assert batcher.queue_depth == 1
    model.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, admitted), WAIT_S)
    assert [r["y_x"][0, 0] for r in results] == [-2.0, 6.0]


async def test_a_deadline_fails_the_request_while_its_batch_still_runs(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor)
    model.gate.clear()
    doomed = submit(batcher, rows(1.0), timeout_s=0.5)
    # Waited for, not assumed: a new executor thread can take a while to start on a busy host.
    assert await asyncio.to_thread(model.entered.wait, WAIT_S), "the request is executing"

    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(doomed, WAIT_S)
    assert not model.gate.is_set(), "it failed before its batch finished"

    # The late result is dropped, the slot comes back, and the next request succeeds.
    model.gate.set()
    after = await asyncio.wait_for(submit(batcher, rows(4.0)), WAIT_S)
    assert after["y_x"][0, 0] == 8.0


async def test_a_request_that_expires_in_the_queue_is_never_executed(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor)
    first = await occupy_slot(batcher, model)
    expiring = submit(batcher, rows(7.0), timeout_s=0.05)
    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(expiring, WAIT_S)
    model.gate.set()
    await asyncio.wait_for(first, WAIT_S)
    await asyncio.wait_for(submit(batcher, rows(1.0)), WAIT_S)
    assert [b["x"][0] for b in model.batches] == [1, 1], "the expired request did not run"


class OneRowModel:
    """Answers one row whatever it is given, and an extra output nobody asks for."""

    def __call__(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        return {"y_x": inputs["x"][:1] * 2, "extra": np.zeros(1, np.float32)}


async def test_a_wrong_batch_dimension_fails_a_lone_request_as_it_fails_a_batch(
    executor: ThreadPoolExecutor,
) -> None:
    """Whether a model's wrong answer is caught must not depend on the load."""
    batcher = make_batcher(OneRowModel(), executor)
    with pytest.raises(InternalError, match=r"'y_x' with shape \[1, 3\] for a batch of 3 rows"):
        await asyncio.wait_for(submit(batcher, rows(1.0, count=3)), WAIT_S)
    # One row for one row is right, and the output nobody asked for is not looked at.
    one = await asyncio.wait_for(submit(batcher, rows(4.0)), WAIT_S)
    assert one["y_x"].tolist() == [[8.0, 8.0, 8.0]] and list(one) == ["y_x"]


async def test_an_expired_request_is_not_counted_as_an_inference(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    """As Triton counts: inferences and queue times of requests that got their outputs; the
    execution itself counts, for the model did run."""
    batcher = make_batcher(model, executor)
    model.gate.clear()
    doomed = submit(batcher, rows(1.0, count=5), timeout_s=0.05)
    assert await asyncio.to_thread(model.entered.wait, WAIT_S)
    with pytest.raises(DeadlineExceededError):
        await asyncio.wait_for(doomed, WAIT_S)
    model.gate.set()
    while batcher.busy_slots:
        await asyncio.sleep(0.01)
    await asyncio.wait_for(submit(batcher, rows(2.0, count=2)), WAIT_S)
    await asyncio.sleep(0)  # statistics hear of a batch in the loop step after its answers
    stats = batcher.stats
    assert (stats.inference_count, stats.execution_count) == (2, 2)
    assert stats.inference_stats.queue.count == 1
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(5, 1), (2, 1)]


async def test_a_failing_model_fails_every_request_of_its_batch_only(
    executor: ThreadPoolExecutor,
) -> None:
    calls: list[int] = []

    def flaky(inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        calls.append(inputs["x"].shape[0])
        if len(calls) == 1:
            raise ValueError("boom")
        return {"y_x": inputs["x"] * 2}

    batcher = make_batcher(flaky, executor, max_batch_size=8)
    failing = [submit(batcher, rows(float(i))) for i in range(3)]
    outcomes = await asyncio.wait_for(asyncio.gather(*failing, return_exceptions=True), WAIT_S)
    assert all(isinstance(o, InternalError) for o in outcomes)
    assert "boom" not in str(outcomes[0]), "the model's message stays in the log"
    ok = await asyncio.wait_for(submit(batcher, rows(3.0)), WAIT_S)
    assert ok["y_x"][0, 0] == 6.0


async def test_close_refuses_new_requests_and_lets_queued_ones_finish(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    batcher = make_batcher(model, executor)
    first = await occupy_slot(batcher, model)
    queued = submit(batcher, rows(1.0))
    await asyncio.sleep(0)
    closing = asyncio.create_task(batcher.close(WAIT_S))
    await asyncio.sleep(0)
    with pytest.raises(ServerBusyError):
        await submit(batcher, rows(2.0))
    model.gate.set()
    await asyncio.wait_for(closing, WAIT_S)
    assert first.result()["y_x"][0, 0] == -2.0
    assert queued.result()["y_x"][0, 0] == 2.0


async def test_close_fails_every_request_left_when_its_grace_runs_out(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    """Not left to its own deadline (a minute by default), and nothing more reaches the
    executor, which close() shuts down, or the model, which is about to be unloaded."""
    loop_errors: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: loop_errors.append(context))
    batcher = make_batcher(model, executor)
    running = await occupy_slot(batcher, model)
    queued = [submit(batcher, rows(float(i)), timeout_s=60.0) for i in range(3)]
    await asyncio.sleep(0)
    await batcher.close(0.05)
    assert all(f.done() for f in (running, *queued)), "failed as the grace ran out"
    for future in (running, *queued):
        with pytest.raises(ServerBusyError, match="unloaded"):
            future.result()
    model.gate.set()  # the running batch returns late: its results are dropped
    while batcher.busy_slots:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(model.batches) == 1, "no batch was dispatched after the grace ran out"
    assert loop_errors == []


class ThreadLog:
    """``y = x``, recording which thread ran each batch, and its rows; ``cost`` runs inside
    every batch."""

    def __init__(self, cost: Callable[[], None] = lambda: None) -> None:
        self.threads: list[int] = []
        self.rows: list[int] = []
        self.cost = cost

    def __call__(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        self.threads.append(threading.get_ident())
        self.rows.append(inputs["x"].shape[0])
        self.cost()
        return {"y_x": inputs["x"]}

    def on_loop(self) -> list[int]:
        """Which batches (by index) ran on the calling thread: the event loop's."""
        loop_thread = threading.get_ident()
        return [i for i, ident in enumerate(self.threads) if ident == loop_thread]


async def one_at_a_time(batcher: Batcher, count: int) -> None:
    for i in range(count):
        result = await asyncio.wait_for(submit(batcher, rows(float(i))), WAIT_S)
        assert result["y_x"][0, 0] == float(i)


def busy_cpu(seconds: float) -> Callable[[], None]:
    def burn() -> None:
        busy_until = time.thread_time() + seconds
        while time.thread_time() < busy_until:
            pass

    return burn


async def test_a_fast_model_moves_onto_the_loop_thread_after_its_first_batch(
    executor: ThreadPoolExecutor,
) -> None:
    model = ThreadLog()
    await one_at_a_time(make_batcher(model, executor, inline_when_fast=True), 50)
    assert 0 not in model.on_loop(), "the first batch, of unknown cost, runs in the executor"
    assert model.on_loop(), "later ones skip the thread hop"


async def test_a_model_slow_on_the_cpu_never_runs_on_the_loop_thread(
    executor: ThreadPoolExecutor,
) -> None:
    model = ThreadLog(busy_cpu(0.002))  # far above the inline threshold, in CPU time
    await one_at_a_time(make_batcher(model, executor, inline_when_fast=True), 5)
    assert model.on_loop() == []


async def test_a_model_that_waits_without_cpu_is_tried_on_the_loop_rarely(
    executor: ThreadPoolExecutor,
) -> None:
    """Like a GPU model: little CPU in its thread, a long wall time. Each try on the loop
    thread fails and the next one comes after twice as many executor batches."""
    model = ThreadLog(lambda: time.sleep(0.002))
    await one_at_a_time(make_batcher(model, executor, inline_when_fast=True), 40)
    on_loop = model.on_loop()
    assert 0 not in on_loop
    assert 1 <= len(on_loop) <= 2, on_loop
    assert all(b - a > 10 for a, b in itertools.pairwise(on_loop)), on_loop


def slow_calls(at: set[int], seconds: float = 0.002) -> Callable[[], None]:
    """A model call cost: nothing, except a wait on the calls numbered in ``at``."""
    calls = itertools.count()

    def cost() -> None:
        if next(calls) in at:
            time.sleep(seconds)

    return cost


async def test_slow_calls_now_and_then_keep_a_fast_model_on_the_loop_thread(
    executor: ThreadPoolExecutor,
) -> None:
    """Two slow calls in a row (a preemption, the host) are not the model's cost."""
    model = ThreadLog(slow_calls({20, 21, 35}))
    await one_at_a_time(make_batcher(model, executor, inline_when_fast=True), 50)
    assert model.on_loop() == list(range(1, 50))


async def test_three_slow_calls_close_together_send_a_model_back_to_the_executor(
    executor: ThreadPoolExecutor,
) -> None:
    model = ThreadLog(slow_calls({20, 21, 23}))
    await one_at_a_time(make_batcher(model, executor, inline_when_fast=True), 30)
    on_loop = model.on_loop()
    assert set(range(1, 24)) <= set(on_loop)
    assert not set(range(24, 30)) & set(on_loop), on_loop


async def test_one_very_slow_call_sends_a_model_back_to_the_executor_at_once(
    executor: ThreadPoolExecutor,
) -> None:
    """A call that held the loop for 10 ms is not waited out as a hiccup (a model slow on
    every fifth call never scored three slow calls close together)."""
    model = ThreadLog(slow_calls({20}, seconds=0.01))
    await one_at_a_time(make_batcher(model, executor, inline_when_fast=True), 30)
    on_loop = model.on_loop()
    assert set(range(1, 21)) <= set(on_loop)
    assert not set(range(21, 30)) & set(on_loop), on_loop


async def test_without_inline_permission_even_a_fast_model_stays_off_the_loop(
    executor: ThreadPoolExecutor,
) -> None:
    """Runtimes that run user code (which may block at any time) never get the loop thread."""
    model = ThreadLog()
    await one_at_a_time(make_batcher(model, executor), 20)
    assert model.on_loop() == []


async def test_a_short_deadline_after_a_long_one_still_fires_on_time(
    model: GatedModel, executor: ThreadPoolExecutor
) -> None:
    """Deadlines share one timer; a request with an earlier deadline than the timer's re-arms it."""
    batcher = make_batcher(model, executor)
    await asyncio.wait_for(submit(batcher, rows(1.0), timeout_s=60.0), WAIT_S)
    model.gate.clear()
    doomed = submit(batcher, rows(2.0), timeout_s=0.05)
    with pytest.raises(DeadlineExceededError, match=r"0\.05s"):
        await asyncio.wait_for(doomed, 5.0)
    model.gate.set()


async def test_an_idle_fast_model_answers_inside_submit_and_batches_the_rest(
    executor: ThreadPoolExecutor,
) -> None:
    model = ThreadLog()
    batcher = make_batcher(model, executor, inline_when_fast=True)
    await one_at_a_time(batcher, 1)  # the first batch: in the executor
    await asyncio.sleep(0)
    lone = submit(batcher, rows(1.0))
    assert lone.done(), "an idle batcher runs a lone request at once"
    assert lone.result()["y_x"][0, 0] == 1.0
    # The same loop step: these queue and run together as the next batch.
    burst = [submit(batcher, rows(float(i))) for i in range(2, 7)]
    assert not any(f.done() for f in burst)
    results = await asyncio.wait_for(asyncio.gather(*burst), WAIT_S)
    assert [r["y_x"][0, 0] for r in results] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert model.rows == [1, 1, 5], "1 in the executor, 1 at once, then the burst as one batch"
