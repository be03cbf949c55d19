"""Bookkeeping that the event loop does for many requests at once, a moment after them.

What a request leaves to observe (its metrics, its access-log line) is queued when it is
answered and handled with the others of the next millisecond, in one callback. Done right
after each answer, on a core that idles between requests, it ran cold and sat between the
answer and the client's next request: with one connection (iris), deferring the request
metrics alone took the p50 from 120-136 µs to 108-110 µs. Under load it runs once for a few
dozen requests, with its code warm.

Readers that must see everything recorded so far (a metrics scrape, shutdown) call
:meth:`Deferred.flush` first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Generic, TypeVar

T = TypeVar("T")

DELAY_S: Final = 0.001
"""How long a queued item may wait: long enough that the requests of one connection's next
few round trips are answered first, short enough that nobody reads stale figures."""

log = logging.getLogger(__name__)


class Deferred(Generic[T]):
    """Calls ``handle(items)`` on the event loop with the items :meth:`add` queued, ``DELAY_S``
    after the first of them (at once when no loop is running)."""

    def __init__(self, name: str, handle: Callable[[list[T]], None], *, most: int) -> None:
        self._name = name
        self._handle = handle
        self._most = most
        self._items: list[T] = []
        self._scheduled_on: asyncio.AbstractEventLoop | None = None
        """The loop asked to handle the queued items, until it has."""

    def add(self, item: T) -> None:
        items = self._items
        items.append(item)
        scheduled = self._scheduled_on
        if len(items) > self._most:
            # The call asked for has not come (its loop stopped for good, say): handle the
            # items now rather than let them pile up.
            self.flush()
        elif len(items) == 1 or scheduled is None or scheduled.is_closed():
            # The first item; or the call asked for is lost with its closed loop: ask again.
            self._schedule()

    def flush(self) -> None:
        """Handle what is queued now."""
        self._scheduled_on = None
        items, self._items = self._items, []
        if not items:
            return
        try:
            self._handle(items)
        except Exception:
            log.exception("%s failed; %d items lost", self._name, len(items))

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()  # a system call on Python 3.11: once a batch
        except RuntimeError:  # no loop here: a test, or a transport shutting down
            self.flush()
            return
        self._scheduled_on = loop
        loop.call_later(DELAY_S, self.flush)
