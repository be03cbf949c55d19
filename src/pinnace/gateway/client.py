"""A small pooled HTTP/1.1 client for talking to upstreams, built for the proxy's hot path.

Why not httpx: the gateway forwards tens of thousands of small requests a second from one core,
and httpx's layering costs more than the upstream's own inference. This client is an
``asyncio.Protocol`` per connection with httptools parsing the response, keep-alive pooling
per upstream, and failures classified by whether the request could have reached the upstream —
the fact that decides whether a non-idempotent request may be retried::

    UpstreamFailure
    ├── ConnectFailure     never sent (refused, connect timeout): always safe to retry
    │   └── ConnectTimeout     the connect ran out of time (the try's, or connect_timeout)
    ├── ResetFailure       sent, then the connection broke before a full response
    ├── TryTimeout         sent, no full response in time
    └── BadResponse        sent, the response was malformed or over the size cap
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import cast

import httptools

Headers = list[tuple[bytes, bytes]]

# Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection and never forwarded; host and
# content-length are rewritten for the next hop.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
        b"trailer", b"upgrade", b"proxy-authorization", b"proxy-authenticate", b"host",
        b"content-length",
    }
)


class UpstreamFailure(Exception):
    sent: bool = True


class ConnectFailure(UpstreamFailure):
    sent = False


class ConnectTimeout(ConnectFailure):
    def __init__(self, message: str, *, whole_try: bool) -> None:
        super().__init__(message)
        self.whole_try = whole_try
        """The try's own timeout ended the connect (not the shorter connect_timeout)."""


class ResetFailure(UpstreamFailure):
    pass


class TryTimeout(UpstreamFailure):
    pass


class BadResponse(UpstreamFailure):
    pass


class Response:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight (no pipelining)."""

    __slots__ = (
        "_body", "_headers", "_limit", "_parser", "_pool", "_size", "_status", "closed",
        "idle_since", "transport", "waiter",
    )

    def __init__(self, pool: ConnectionPool, limit: int) -> None:
        self._pool = pool
        self._limit = limit
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._status = 0
        self._headers: Headers = []
        self._body: list[bytes] = []
        self._size = 0

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(f"malformed response: {exc}"))
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ResetFailure("connection closed before a full response"))
        self._pool.forget(self)

    # -- httptools callbacks -------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._headers = []
        self._body = []
        self._size = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._limit:
            self._fail(BadResponse("upstream response over the size cap"))
            self.close()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.closed = True  # finish this exchange, then close instead of pooling
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            waiter.set_result(Response(self._status, self._headers, body))

    # -- ours ----------------------------------------------------------------------------------
    def _fail(self, exc: UpstreamFailure) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[Response]) -> None:
    if not waiter.done():
        waiter.set_exception(TryTimeout("no response in time"))


class ConnectionPool:
    """Keep-alive connections to one ``host:port``; connections are made on demand.

    The number of connections is bounded by the caller (the circuit breaker caps in-flight
    requests per upstream); idle ones beyond ``max_idle`` or older than ``idle_timeout`` are
    closed.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float = 1.0,
        idle_timeout: float = 4.0,
        max_idle: int = 256,
        max_response_bytes: int = 64 << 20,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self._host_header = f"{host}:{port}".encode()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._retired = False

    @property
    def open_connections(self) -> int:
        return len(self._all)

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        timeout: float,
    ) -> Response:
        """One exchange. ``headers`` must hold no hop-by-hop header; ``timeout`` covers connect,
        send and the full response."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout
        conn = self._take_idle()
        if conn is None:
            conn = await self._connect(loop, timeout)
        transport = conn.transport
        assert transport is not None
        waiter: asyncio.Future[Response] = loop.create_future()
        conn.waiter = waiter
        parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", self._host_header]
        parts.append(b"\r\ncontent-length: %d\r\n" % len(body))
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", body)
        transport.write(b"".join(parts))
        timer = loop.call_at(ends, _expire, waiter)  # what the connect took counts too
        try:
            response = await waiter
        except BaseException:
            conn.close()  # mid-exchange: the connection's state is unknown, never reuse it
            raise
        finally:
            timer.cancel()
        self._release(conn)
        return response

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()  # LIFO: the warmest connection, and cold ones age out
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if time.monotonic() - conn.idle_since >= self.idle_timeout:
                # Past its time (the sweep has not come round yet), and so is every colder one:
                # the upstream may be closing them (uvicorn keeps a connection 5 s), and a
                # request written now would meet that close.
                conn.close()
                self.close_idle()
                return None
            return conn
        return None

    async def _connect(self, loop: asyncio.AbstractEventLoop, try_timeout: float) -> _Connection:
        conn = _Connection(self, self.max_response_bytes)
        timeout = min(try_timeout, self.connect_timeout)
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: conn, self.host, self.port), timeout
            )
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"cannot connect to {self.host}:{self.port} in {timeout:g}s",
                whole_try=try_timeout <= self.connect_timeout,
            ) from exc
        except OSError as exc:
            raise ConnectFailure(f"cannot connect to {self.host}:{self.port}") from exc
        self._all.add(conn)
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.closed or self._retired or len(self._idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        self._all.discard(conn)

    def close_idle(self, older_than: float | None = None) -> None:
        """Close idle connections (all, or those idle longer than ``older_than`` seconds)."""
        now = time.monotonic()
        keep: list[_Connection] = []
        for conn in self._idle:
            if older_than is not None and now - conn.idle_since < older_than and not conn.closed:
                keep.append(conn)
            else:
                conn.close()
        self._idle = keep

    def retire(self) -> None:
        """Stop pooling: idle connections close now, busy ones when their exchange ends."""
        self._retired = True
        self.close_idle()

    def close(self) -> None:
        self._retired = True
        for conn in list(self._all):
            conn.close()
        self._idle = []


def forwardable(headers: Iterable[tuple[bytes, bytes]], drop: frozenset[bytes]) -> Headers:
    """The end-to-end headers of ``headers`` (names lower-case), minus ``drop``."""
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in drop]
