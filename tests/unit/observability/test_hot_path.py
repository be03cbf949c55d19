"""What the batcher tells observers: request records, executed batches, in-flight counts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pinnace.core.batcher import Arrays, Batcher
from pinnace.core.stats import (
    CURRENT_RECORD,
    ExecutedBatch,
    ModelStats,
    RecordFactory,
    RequestRecord,
)

WAIT_S = 10.0


class Recorder:
    record_factory: RecordFactory | None = None

    def __init__(self) -> None:
        self.batches: list[tuple[str, str, ExecutedBatch]] = []

    def on_batch(self, model: str, version: str, batch: ExecutedBatch) -> None:
        self.batches.append((model, version, batch))


def test_records_and_observers_see_each_batch_once() -> None:
    gate, entered = threading.Event(), threading.Event()

    def model(inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        entered.set()
        assert gate.wait(WAIT_S)
        return {"y": inputs["x"] * 2}

    async def main() -> tuple[Recorder, list[RequestRecord], list[int]]:
        observer = Recorder()
        pool = ThreadPoolExecutor(max_workers=1)
        batcher = Batcher(
            model, pool, instances=1, max_batch_size=8, max_queue_delay_s=0.0,
            max_queue_size=10, stats=ModelStats(name="m", version="3"), observer=observer,
        )
        records = [RequestRecord("m", "3", f"r{i}") for i in range(3)]

        async def one(record: RequestRecord, rows: int) -> Arrays:
            CURRENT_RECORD.set(record)  # as the data plane does, in the request's own task
            x = np.ones((rows, 2), dtype=np.float32)
            return await batcher.submit({"x": x}, ["y"], rows=rows, key="k", timeout_s=WAIT_S)

        first = asyncio.create_task(one(records[0], 1))
        while not entered.is_set():  # the first batch is running, held at the gate
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(one(r, 2)) for r in records[1:]]
        await asyncio.sleep(0)
        seen = [batcher.in_flight, batcher.queue_depth, batcher.busy_slots]
        gate.set()
        await asyncio.gather(first, *rest)
        seen.append(batcher.in_flight)
        pool.shutdown()
        return observer, records, seen

    observer, records, seen = asyncio.run(main())
    assert seen == [3, 2, 1, 0]
    assert [(m, v, b.rows, len(b.queue_s)) for m, v, b in observer.batches] == [
        ("m", "3", 1, 1), ("m", "3", 4, 2)
    ]
    assert [b.records for _, _, b in observer.batches] == [records[:1], records[1:]]
    assert [r.batch_size for r in records] == [1, 4, 4]
    second = observer.batches[1][2]
    assert records[1].compute_s == second.compute_s > 0
    assert second.dispatched <= second.started
