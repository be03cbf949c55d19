"""The upstream client: what a timed-out connect says about the try; stale idle connections."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from pinnace.gateway import client as client_module
from pinnace.gateway.client import ConnectFailure, ConnectionPool, ConnectTimeout, TryTimeout


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


def test_an_idle_connection_past_its_time_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep runs every so often; between sweeps the pool itself refuses stale connections."""
    now = [1000.0]
    monkeypatch.setattr(client_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    accepted: list[asyncio.Task[Any]] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        accepted.append(task)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        except asyncio.IncompleteReadError:
            pass  # the pool closed its end
        finally:
            writer.close()

    async def go() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool("127.0.0.1", port, idle_timeout=4.0)
        try:
            for advance, connections in ((0.0, 1), (3.9, 1), (4.0, 2), (0.1, 2)):
                now[0] += advance
                response = await pool.request(b"GET", b"/", [], b"", 5.0)
                assert (response.status, response.body) == (200, b"ok")
                assert len(accepted) == connections, advance
        finally:
            pool.retire()
            server.close()
            await server.wait_closed()
            await asyncio.wait_for(asyncio.gather(*accepted), 5)

    asyncio.run(go())


class _SlowConnects(asyncio.SelectorEventLoop):
    """Connects take 0.2 s; records when each response timer is due."""

    def __init__(self) -> None:
        super().__init__()
        self.response_timers: list[float] = []

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.2)
        return await super().create_connection(*args, **kwargs)

    def call_at(self, when: float, callback: Any, *args: Any,
                context: Any = None) -> asyncio.TimerHandle:
        if callback is client_module._expire:
            self.response_timers.append(when)
        return super().call_at(when, callback, *args, context=context)


def test_the_try_timeout_counts_the_connect_too() -> None:
    handlers: list[asyncio.Task[Any]] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        await reader.read()  # never answers; returns when the pool closes its end
        writer.close()

    async def go(loop: _SlowConnects) -> None:
        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = ConnectionPool("127.0.0.1", port, connect_timeout=5.0)
        started = loop.time()
        with pytest.raises(TryTimeout):
            await pool.request(b"GET", b"/", [], b"", 0.5)
        # Due 0.5 s after the request began, not 0.5 s after the 0.2 s connect ended.
        assert loop.response_timers and loop.response_timers[0] - started < 0.6
        pool.retire()
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers), 5)

    loop = _SlowConnects()
    with asyncio.Runner(loop_factory=lambda: loop) as runner:
        runner.run(go(loop))
