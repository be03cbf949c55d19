"""A served model version: its manifest, its loaded runtime, and the scheduler in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pinnace.manifest.schema import Manifest
from pinnace.repository.state import ModelState
from pinnace.runtimes.base import Runtime

Arrays = dict[str, np.ndarray]


class Scheduler(Protocol):
    """What stands between the data plane and a runtime (the core's batcher)."""

    stats: Any

    def submit(
        self, inputs: Arrays, outputs: Sequence[str], *, rows: int, key: Hashable, timeout_s: float
    ) -> asyncio.Future[Arrays]: ...

    async def close(self, grace_s: float) -> None: ...


class ServedVersion:
    """One version of one model, loaded and able to take requests."""

    def __init__(self, manifest: Manifest, version: int, version_dir: Path, runtime: Runtime) -> None:
        self.manifest = manifest
        self.name = manifest.name
        self.version = version
        self.version_str = str(version)
        self.version_dir = version_dir
        self.runtime = runtime
        self.state = ModelState.LOADING
        self.scheduler: Scheduler | None = None
        self.loaded_at = 0.0
        self.load_seconds = 0.0


SchedulerFactory = Callable[[ServedVersion], Scheduler]
