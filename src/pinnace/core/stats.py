"""Per-model-version statistics in the shape Triton reports them (``/v2/models/{m}/stats``).

Counters are plain integers updated on the event loop thread only, so they need no locks. The
batcher records into them; observers (Prometheus, tracing) are notified through
:class:`InferenceObserver` so that ``core`` imports no metrics library.
"""

from __future__ import annotations

import time
from typing import Protocol

import msgspec


class Duration(msgspec.Struct):
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


class BatchStat(msgspec.Struct):
    batch_size: int
    compute_input: Duration = msgspec.field(default_factory=Duration)
    compute_infer: Duration = msgspec.field(default_factory=Duration)
    compute_output: Duration = msgspec.field(default_factory=Duration)


class InferenceStats(msgspec.Struct):
    success: Duration = msgspec.field(default_factory=Duration)
    fail: Duration = msgspec.field(default_factory=Duration)
    queue: Duration = msgspec.field(default_factory=Duration)
    compute_input: Duration = msgspec.field(default_factory=Duration)
    compute_infer: Duration = msgspec.field(default_factory=Duration)
    compute_output: Duration = msgspec.field(default_factory=Duration)


class ModelStats(msgspec.Struct):
    """Counts since the version loaded; ``inference_count`` counts rows, ``execution_count``
    counts model executions (batches)."""

    name: str
    version: str
    last_inference: int = 0
    inference_count: int = 0
    execution_count: int = 0
    inference_stats: InferenceStats = msgspec.field(default_factory=InferenceStats)
    batch_stats: dict[int, BatchStat] = msgspec.field(default_factory=dict)

    def record_batch(self, size: int, t_input: float, t_infer: float, t_output: float) -> None:
        self.execution_count += 1
        self.inference_count += size
        self.last_inference = int(time.time() * 1000)
        s = self.inference_stats
        s.compute_input.add(t_input, size)
        s.compute_infer.add(t_infer, size)
        s.compute_output.add(t_output, size)
        stat = self.batch_stats.get(size)
        if stat is None:
            stat = self.batch_stats[size] = BatchStat(batch_size=size)
        stat.compute_input.add(t_input)
        stat.compute_infer.add(t_infer)
        stat.compute_output.add(t_output)


class InferenceObserver(Protocol):
    """Receives what the hot path measured; implemented by observability, handed in."""

    def on_batch(self, model: str, version: str, size: int, queue_s: list[float], compute_s: float) -> None: ...

    def on_request(self, model: str, version: str, ok: bool, total_s: float) -> None: ...


class NullObserver:
    """The observer used when nothing observes: costs one method call."""

    def on_batch(self, model: str, version: str, size: int, queue_s: list[float], compute_s: float) -> None:
        return None

    def on_request(self, model: str, version: str, ok: bool, total_s: float) -> None:
        return None
