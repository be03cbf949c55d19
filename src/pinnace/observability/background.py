"""A bounded hand-off from the event loop to one background thread, for log writers.

The event loop only appends to a deque (tens of nanoseconds, no lock, no system call); a daemon
thread wakes every ``interval_s``, takes everything queued and writes it in one go. When the
queue is full the item is dropped and counted, so a slow disk or sink can never grow memory
or stall requests. ``close`` writes what is left and stops the thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
_CHUNK = 64
"""Items written per call; small, so that the writer never holds the GIL for long."""

log = logging.getLogger(__name__)


class BackgroundWriter(Generic[T]):
    """Calls ``write(items)`` on its own thread with what :meth:`put` queued."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[T]], None],
        *,
        max_items: int,
        interval_s: float = 0.1,
    ) -> None:
        self._write = write
        self._max_items = max_items
        self._interval_s = interval_s
        self._items: deque[T] = deque()
        self._stop = threading.Event()
        self._writing = threading.Lock()  # flush() and the thread never write at once
        self.dropped = 0
        """Items refused because the queue was full (written by the putting thread only)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> bool:
        """Queue ``item``; False (and counted) when the queue is full."""
        if len(self._items) >= self._max_items:
            self.dropped += 1
            return False
        self._items.append(item)
        return True

    @property
    def pending(self) -> int:
        return len(self._items)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout_s)

    def flush(self) -> None:
        """Write what is queued now, on the calling thread (tests; shutdown)."""
        self._drain()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        with self._writing:
            self._drain_locked()

    def _drain_locked(self) -> None:
        items = self._items
        while items:
            batch: list[T] = []
            # popleft is atomic: the loop may keep appending while this thread takes.
            while items and len(batch) < _CHUNK:
                try:
                    batch.append(items.popleft())
                except IndexError:
                    break
            try:
                self._write(batch)
            except Exception:
                log.exception("background writer %s failed; %d items lost", self._thread.name, len(batch))
            # Hand the GIL back between chunks: formatting a whole interval's lines in one go
            # held it for milliseconds, and the event loop's requests waited that long (p99).
            time.sleep(0)
