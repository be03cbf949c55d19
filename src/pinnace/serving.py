"""HTTP serving pieces the server's and the gateway's listeners share: capped body reading,
and uvicorn's httptools protocol with one system call per response instead of two.

uvicorn writes a response's head (at ``http.response.start``) and its body (at
``http.response.body``) as two ``transport.write`` calls, and each is a ``send()`` to the
kernel. For small answers that second system call was the largest single cost in the profile
(about a sixth of the process, for the server and the gateway alike). This protocol hands
uvicorn a transport that holds the head back and sends it together with the body's first
write, at once. A head with no body write after it (an empty body) goes out at the end of the
loop step (``call_soon``), so nothing waits longer than the current step.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Final

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pinnace.errors import InvalidInputError, PayloadTooLargeError

BODY_TIMEOUT_S: Final = 30.0
"""How long a body sent in several pieces may take to arrive in full."""


class ClientGone(Exception):
    """The client disconnected before its body arrived."""


async def read_body(receive: Any, cap: int, declared: int | None = None) -> bytes:
    """The whole ASGI request body, refused (413) as soon as it is known to exceed ``cap``.

    ``declared`` is the Content-Length, checked before anything is read. A body that arrives in
    one piece (the common case) returns without any timer; a body in several pieces must
    arrive within ``BODY_TIMEOUT_S``, so a client trickling bytes cannot hold a request forever.
    """
    refuse_declared(declared, cap)
    message = await first_message(receive)
    body = whole_body(message, cap)
    return body if body is not None else await rest_of_body(receive, message, cap)


async def first_message(receive: Any) -> dict[str, Any]:
    """A request's first ASGI message, which must come within ``BODY_TIMEOUT_S``: a client that
    sends a head and then nothing (its body, or after ``Expect: 100-continue``) gets a 400
    rather than holding its connection and a task forever."""
    task = asyncio.current_task()
    assert task is not None, "called from a request's task"
    watch = _FirstMessageWatch.of(task.get_loop())
    watch.since[task] = watch.loop.time()
    if watch.timer is None:
        watch.arm()
    try:
        message: dict[str, Any] = await receive()
    except asyncio.CancelledError as exc:
        if exc.args != (_BODY_LATE,):
            raise  # not the sweep's: the server stops, or the client went away
        task.uncancel()
        raise InvalidInputError(f"request body not received within {BODY_TIMEOUT_S:g}s") from None
    finally:
        watch.since.pop(task, None)
    return message


class _FirstMessageWatch:
    """The tasks of one loop waiting for their request's first message, and since when. A
    timer sweeps them every ``_SWEEP_S`` while any wait, rather than a timer a request: the
    gateway reads every body this way, and a loop timer costs 2.2 µs a request on uvloop,
    ``asyncio.timeout`` 4.5 µs, this watch 0.8 µs."""

    __slots__ = ("loop", "since", "timer")

    _current: ClassVar[_FirstMessageWatch | None] = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.since: dict[asyncio.Task[Any], float] = {}
        self.timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _FirstMessageWatch:
        """The loop's watch. A process serves from one loop; where several take turns (tests),
        a loop may get a new one, while the one before keeps sweeping its own tasks (its timer
        holds it, and each task leaves the watch it joined)."""
        watch = cls._current
        if watch is None or watch.loop is not loop:
            watch = cls._current = cls(loop)
        return watch

    def arm(self) -> None:
        self.timer = self.loop.call_later(_SWEEP_S, self._sweep)

    def _sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        for task, since in list(self.since.items()):
            if now - since >= BODY_TIMEOUT_S:
                del self.since[task]
                task.cancel(_BODY_LATE)  # the message tells this cancellation from any other
        if self.since:
            self.arm()


_BODY_LATE: Final = "request body not received in time"
_SWEEP_S: Final = 1.0
"""How often waiting requests are checked: a head without a body is refused within
``BODY_TIMEOUT_S`` and this."""


def refuse_declared(declared: int | None, cap: int) -> None:
    """413 for a Content-Length over ``cap``, before anything is read."""
    if declared is not None and declared > cap:
        raise PayloadTooLargeError(f"body of {declared} bytes exceeds the limit of {cap}")


def whole_body(message: dict[str, Any], cap: int) -> bytes | None:
    """The body of a request's first ASGI message when that message holds all of it; None when
    more follows (then :func:`rest_of_body` reads the rest).

    :func:`read_body` in two steps, for a handler that receives the first message itself: the
    data listener's inference route saves a coroutine per request that way.
    """
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        return None
    if len(body) > cap:
        raise PayloadTooLargeError(f"body exceeds the limit of {cap} bytes")
    return body


async def rest_of_body(receive: Any, first: dict[str, Any], cap: int) -> bytes:
    """The whole body of a request whose first message (``first``) said more follows; it must
    arrive within ``BODY_TIMEOUT_S``."""
    chunks = [first.get("body", b"")]
    size = len(chunks[0])
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > cap:
                    # Chunked bodies announce no length: stop as soon as the cap is crossed.
                    raise PayloadTooLargeError(f"body exceeds the limit of {cap} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise InvalidInputError(f"request body not received within {BODY_TIMEOUT_S:g}s") from None


_JOIN_BELOW = 64 * 1024
"""Bodies smaller than this are joined to the head; larger ones go out beside it."""


class _CoalescingTransport:
    """Delegates to a transport; a write joins the one held back before it."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._transport.is_closing():
            # The client has gone (uvicorn marks only a connection's latest cycle disconnected,
            # so an earlier pipelined one still sends): its answer is dropped, as asyncio's
            # transports drop writes after close, where uvloop's would raise.
            return
        if self._pending is None:
            self._pending = data
            self._loop.call_soon(self._flush)
        else:
            # Flushing on the second write, not at the end of the step, keeps a lone request's
            # latency where it was (the end-of-step flush cost ~40 µs at one connection).
            pending, self._pending = self._pending, None
            if len(data) < _JOIN_BELOW:
                self._transport.write(pending + data)
            else:
                # A large body is not copied to be joined: writelines sends both buffers in one
                # vectored write.
                self._transport.writelines((pending, data))

    def write_whole(self, head: bytes, body: bytes) -> None:
        """A whole response (head and body) at once, after any head still held back."""
        if self._transport.is_closing():
            return  # the client has gone (see write)
        if self._pending is not None:
            head, self._pending = self._pending + head, None
        if len(body) < _JOIN_BELOW:
            self._transport.write(head + body)
        else:
            self._transport.writelines((head, body))

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and not self._transport.is_closing():
            self._transport.write(pending)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked once per response: not through __getattr__
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with coalesced writes and one keep-alive timer per idle
    period instead of one per response.

    uvicorn arms a timer after every response and cancels it when the next request's bytes
    arrive: a timer created and freed per request (about 1.5 µs of CPU). Here the connection
    notes when it went idle; the timer, armed once, closes it when it finds the connection
    idle for ``timeout_keep_alive`` seconds, and otherwise waits for what is left.
    """

    coalescing: _CoalescingTransport
    """The transport uvicorn writes to, typed as what it is."""
    _idle_since: float | None = None
    """When the last response went out with nothing after it; None while a request is read
    or served."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.coalescing = _CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(self.coalescing)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        super().connection_lost(exc)

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls this as each read arrives: the connection is busy, the timer stays.
        self._idle_since = None

    def on_response_complete(self) -> None:
        # uvicorn's, with the idle mark in place of a new timer.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        idle_since = self._idle_since
        cycle = self.cycle
        if idle_since is None or self.pipeline or (cycle is not None and not cycle.response_complete):
            # Busy: the next response arms the timer again. A request whose head came in the
            # read that carried the answer to the one before it is busy too, with no read since.
            return
        left = idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()
