"""The upstream client's failure classes: what a timed-out connect says about the try."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pinnace.gateway.client import ConnectFailure, ConnectionPool, ConnectTimeout


class _NeverConnects(asyncio.SelectorEventLoop):
    """Every connect hangs, as one to a host that drops SYNs does."""

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)


@pytest.mark.parametrize(
    ("try_timeout", "connect_timeout", "whole_try"),
    [(0.05, 1.0, True), (1.0, 0.05, False)],
    ids=["the-try-ran-out", "connect-timeout-ran-out"],
)
def test_a_connect_that_runs_out_of_time_says_whose_time_it_was(
    try_timeout: float, connect_timeout: float, whole_try: bool
) -> None:
    async def go() -> None:
        pool = ConnectionPool("127.0.0.1", 9, connect_timeout=connect_timeout)
        with pytest.raises(ConnectTimeout) as caught:
            await pool.request(b"GET", b"/", [], b"", try_timeout)
        assert caught.value.whole_try is whole_try
        assert not caught.value.sent  # never sent: as safe to retry as any connect failure
        assert isinstance(caught.value, ConnectFailure)

    with asyncio.Runner(loop_factory=_NeverConnects) as runner:
        runner.run(go())
