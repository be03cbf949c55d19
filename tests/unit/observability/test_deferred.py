"""Deferred bookkeeping: queued items are handled together a moment later on the event loop,
at once without a loop, never lost to a loop that closed, and on demand for readers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pinnace.observability.deferred import DELAY_S, Deferred


class Handled:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def __call__(self, items: list[int]) -> None:
        if -1 in items:
            raise ValueError("a broken item")
        self.calls.append(items)


def test_items_queued_on_a_loop_are_handled_together_a_moment_later_in_order() -> None:
    handled = Handled()
    deferred: Deferred[int] = Deferred("test", handled, most=100)

    async def queue() -> list[list[list[int]]]:
        for item in range(5):
            deferred.add(item)
        seen = [list(handled.calls)]
        await asyncio.sleep(0)
        seen.append(list(handled.calls))
        await asyncio.sleep(DELAY_S * 5)
        seen.append(list(handled.calls))
        return seen

    assert asyncio.run(queue()) == [[], [], [[0, 1, 2, 3, 4]]]


def test_without_a_loop_items_are_handled_at_once_and_flush_handles_what_waits() -> None:
    handled = Handled()
    deferred: Deferred[int] = Deferred("test", handled, most=100)
    deferred.add(1)
    deferred.add(2)
    assert handled.calls == [[1], [2]]

    async def queue_and_read() -> None:
        deferred.add(3)
        deferred.flush()  # a reader that must see everything so far
        assert handled.calls[-1] == [3]
        await asyncio.sleep(DELAY_S * 5)  # the scheduled call finds nothing left

    asyncio.run(queue_and_read())
    assert handled.calls == [[1], [2], [3]]


def queued_on_a_loop_that_stops(deferred: Deferred[int], item: int) -> asyncio.AbstractEventLoop:
    """``item`` queued on a loop that stops before the call it asked for runs."""

    async def queue_one() -> None:
        deferred.add(item)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(queue_one())
    return loop


def test_items_whose_loop_closed_first_are_handled_with_the_next_one() -> None:
    handled = Handled()
    deferred: Deferred[int] = Deferred("test", handled, most=100)
    queued_on_a_loop_that_stops(deferred, 1).close()
    assert handled.calls == []
    deferred.add(2)  # no loop now
    assert handled.calls == [[1, 2]]


def test_a_full_queue_is_handled_at_once_on_a_loop_that_stopped_for_good() -> None:
    handled = Handled()
    deferred: Deferred[int] = Deferred("test", handled, most=3)
    loop = queued_on_a_loop_that_stops(deferred, 0)  # stopped, not closed: its call never comes
    for item in range(1, 4):
        deferred.add(item)
    assert handled.calls == [[0, 1, 2, 3]]
    loop.close()


def test_a_full_queue_is_handled_at_once_even_on_a_running_loop() -> None:
    handled = Handled()
    deferred: Deferred[int] = Deferred("test", handled, most=3)
    stopped = queued_on_a_loop_that_stops(deferred, 0)

    async def queue_more() -> list[list[int]]:
        for item in range(1, 4):
            deferred.add(item)  # on this loop: the stopped one's call still seems to be coming
        return list(handled.calls[-1]) if handled.calls else []

    assert asyncio.run(queue_more()) == [0, 1, 2, 3]
    stopped.close()


def test_a_failing_handler_loses_its_items_only_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    handled = Handled()
    deferred: Deferred[int] = Deferred("counting things", handled, most=100)
    with caplog.at_level(logging.ERROR):
        deferred.add(-1)
    deferred.add(5)
    assert handled.calls == [[5]]
    assert [r.getMessage() for r in caplog.records] == ["counting things failed; 1 items lost"]
