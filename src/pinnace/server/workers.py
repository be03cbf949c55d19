"""``pinnace serve --workers N``: N server processes sharing the data ports, and their supervisor.

::

                      ┌──────────────── supervisor (this module, one event loop) ────────────────┐
    management :8002 ─┤ REST proxy: checks the token, sends load/unload to every worker          │
    gRPC mgmt  :8003 ─┤ gRPC proxy: the same, passing messages through as raw bytes              │
                      │ starts the workers, restarts one that dies (with backoff), forwards      │
                      │ SIGTERM/SIGINT, exits 0 when every worker exited 0                       │
                      └───────┬──────────────────────────────────────────┬───────────────────────┘
                              │ private loopback management ports         │
                       worker 0: ``serve()``                       worker N-1: ``serve()``
    data :8000 ─┐      its own models, batchers, stats             its own models, ...
    gRPC :8001 ─┴─ every worker listens on these with SO_REUSEPORT; the kernel spreads new
                   connections over the workers' listening sockets (by a hash of the 4-tuple).

Why SO_REUSEPORT rather than one socket shared by all workers: with a shared accept queue the
worker whose loop wakes first takes most of a burst of new connections (a load balancer's or
wrk's 64 at once), and keep-alive pins that imbalance for the connections' lives; per-worker
queues spread them evenly. The cost: a worker's not-yet-accepted connections are reset when it
dies, and a stale process of the same user with SO_REUSEPORT on the port would share it.

Why a supervisor serves management: a load or unload must change every worker, and a request to
a shared port reaches exactly one. The supervisor checks the token, then forwards to each
worker's private loopback management listener (with the same token), and answers with the first
failure or the first success. Everything else (the index, unknown routes) is forwarded to one
worker. Workers are the same ``serve()`` as the single-process server; they learn their settings
(ports, token) as JSON on stdin so the token never appears in a process listing.

A worker that is restarted loads the repository as it is on disk, then unloads what a running
sibling reports as unloaded, so that management state survives a crash of one worker (not of
all of them at once). Memory is paid per worker: each holds its own copy of every model.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hmac
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
import msgspec

from pinnace.errors import PinnaceError
from pinnace.server.app import _uvicorn, serve
from pinnace.server.rest.http import (
    Headers,
    Scope,
    read_body,
    respond,
    respond_error,
)
from pinnace.serving import ClientGone
from pinnace.settings import ServerSettings

log = logging.getLogger(__name__)

_WORKER_CODE: Final = "from pinnace.server.workers import worker_main; worker_main()"
_BACKOFF_S: Final = 0.5
"""First restart delay; doubles with each quick failure in a row, up to _BACKOFF_MAX_S."""
_BACKOFF_MAX_S: Final = 30.0
_HEALTHY_AFTER_S: Final = 30.0
"""A worker that lived this long before dying counts as healthy: its backoff starts over."""
_MAX_QUICK_FAILURES: Final = 5
"""Quick failures in a row (e.g. an unusable setting) after which the supervisor gives up."""
_START_TIMEOUT_S: Final = 120.0
"""How long a management request waits for a starting worker to open its management port."""
_LOAD_TIMEOUT_S: Final = 600.0
"""How long one worker may take to load a model on behalf of a management request."""
_MAX_MANAGEMENT_BODY: Final = 64 * 1024
_FANNED_OUT: Final = ("load", "unload")
_GRPC_FANNED_OUT: Final = frozenset({"RepositoryModelLoad", "RepositoryModelUnload"})
_FORWARDED_REQUEST_HEADERS: Final = frozenset({b"authorization", b"content-type"})
_FORWARDED_RESPONSE_HEADERS: Final = frozenset({"content-type", "retry-after", "www-authenticate", "allow"})


class WorkerSpec(msgspec.Struct):
    """What the supervisor tells a worker on its stdin."""

    index: int
    supervisor_pid: int
    settings: ServerSettings


def run_workers(settings: ServerSettings) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM/SIGINT; returns the exit code."""
    supervisor = Supervisor(settings)
    # The stdlib loop, not uvloop: its subprocesses start with vfork/exec, which runs no
    # pthread_atfork handlers (gRPC's log a warning on every fork), and the supervisor is no
    # hot path.
    with asyncio.Runner() as runner:
        return runner.run(supervisor.run())


# -- the worker side ----------------------------------------------------------------------------


def worker_main() -> None:
    """Entry point of one worker process: settings from stdin, then the ordinary server."""
    from pinnace.observability.logging import configure_logging

    spec = decode_spec(sys.stdin.buffer.read())
    _exit_with_parent(spec.supervisor_pid)
    settings = spec.settings
    configure_logging(settings.log_level, settings.log_format)
    try:
        sock = bind_reuseport(settings.host, settings.http_port)
    except OSError as exc:
        log.error(
            "worker %d cannot listen on %s:%d: %s",
            spec.index,
            settings.host,
            settings.http_port,
            exc,
        )
        sys.exit(1)
    sys.exit(_run_loop(_serve_worker(spec.index, settings, sock)))


async def _serve_worker(index: int, settings: ServerSettings, sock: socket.socket) -> int:
    try:
        await serve(settings, data_socket=sock)
    except PinnaceError as exc:
        log.error("worker %d failed: %s", index, exc.message)
        return 1
    return 0


def bind_reuseport(host: str, port: int, *, listen: bool = True) -> socket.socket:
    """A TCP socket on ``host:port`` that other processes may bind too (SO_REUSEPORT)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(4096)
    except OSError:
        sock.close()
        raise
    return sock


def encode_spec(spec: WorkerSpec) -> bytes:
    return msgspec.json.encode(spec, enc_hook=_encode_path)


def decode_spec(raw: bytes) -> WorkerSpec:
    return msgspec.json.decode(raw, type=WorkerSpec, dec_hook=_decode_path)


def _encode_path(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise NotImplementedError(type(value).__name__)


def _decode_path(kind: type, value: Any) -> Any:
    if kind is Path:
        return Path(value)
    raise NotImplementedError(kind.__name__)


def _exit_with_parent(supervisor_pid: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies, so that no worker outlives it."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # it died before the request above took effect
        sys.exit(1)


# -- the supervisor -----------------------------------------------------------------------------


@dataclass
class _Slot:
    """One worker position; its process is replaced when it dies."""

    index: int
    process: asyncio.subprocess.Process | None = None
    management_port: int = 0
    grpc_management_port: int | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the current process answers on its management port and has loaded its models."""
    exit_code: int | None = None

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}"


class Supervisor:
    """Starts, watches and stops the workers, and serves the management ports for all of them."""

    def __init__(self, settings: ServerSettings) -> None:
        if settings.workers < 1:
            raise ValueError("workers must be at least 1")
        self.settings = settings
        self.token = settings.management_token or _new_token()
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self._stop = asyncio.Event()
        self._gave_up = False
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> int:
        settings = self.settings
        # Held (bound, not listening) for the supervisor's life: a taken port fails here, once,
        # and port 0 becomes one concrete port that every worker then shares.
        try:
            held = [bind_reuseport(settings.host, settings.http_port, listen=False)]
            if settings.grpc_port is not None:
                held.append(bind_reuseport(settings.host, settings.grpc_port, listen=False))
        except OSError as exc:
            log.error("cannot bind the data ports on %s: %s", settings.host, exc)
            return 1
        self.http_port = held[0].getsockname()[1]
        self.grpc_port = held[1].getsockname()[1] if len(held) > 1 else None
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET:
            # httpx logs every request at INFO; the supervisor polls its workers.
            httpx_log.setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        timeout = httpx.Timeout(_LOAD_TIMEOUT_S, connect=5.0)
        async with httpx.AsyncClient(timeout=timeout, trust_env=False) as client:
            self._client = client
            listeners: list[Any] = []
            try:
                await self._start_listeners(listeners)
            except OSError as exc:
                log.error("cannot open the management ports on %s: %s", settings.management_host, exc)
                await self._stop_listeners(listeners)
                for sock in held:
                    sock.close()
                return 1
            keepers = [asyncio.create_task(self._keep(slot)) for slot in self.slots]
            log.info("supervisor: %d workers on %s:%d", len(self.slots), settings.host, self.http_port)
            await self._stop.wait()
            log.info("supervisor stopping: asking every worker to finish")
            await asyncio.gather(*keepers, return_exceptions=True)
            await self._stop_listeners(listeners)
        for sock in held:
            sock.close()
        codes = [slot.exit_code for slot in self.slots]
        ok = not self._gave_up and all(code == 0 for code in codes)
        log.info("supervisor stopped", extra={"worker_exit_codes": codes})
        return 0 if ok else 1

    # -- workers ------------------------------------------------------------------------------

    async def _keep(self, slot: _Slot) -> None:
        """Run the slot's worker until stopping; restart it when it dies on its own."""
        quick_failures = 0
        while True:
            started = time.monotonic()
            try:
                process = await self._spawn(slot)
            except OSError:
                log.exception("worker %d could not be started", slot.index)
                self._gave_up = True
                self._stop.set()
                return
            prober = asyncio.create_task(self._await_started(slot, process))
            code = await self._wait(process)
            prober.cancel()
            slot.started.clear()
            if self._stop.is_set():
                slot.exit_code = code
                return
            lived = time.monotonic() - started
            quick_failures = 1 if lived >= _HEALTHY_AFTER_S else quick_failures + 1
            if quick_failures > _MAX_QUICK_FAILURES:
                log.error("worker %d failed %d times in a row; giving up", slot.index, quick_failures)
                slot.exit_code = code
                self._gave_up = True
                self._stop.set()
                return
            delay = min(_BACKOFF_MAX_S, _BACKOFF_S * 2 ** (quick_failures - 1))
            log.error(
                "worker %d (pid %d) exited with %s after %.1fs; restarting in %.1fs",
                slot.index,
                process.pid,
                code,
                lived,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                slot.exit_code = code
                return

    async def _spawn(self, slot: _Slot) -> asyncio.subprocess.Process:
        # Fresh private ports on every start: a port that failed once may still be taken.
        slot.management_port = _free_port()
        slot.grpc_management_port = _free_port() if self.settings.grpc_management_port else None
        settings = msgspec.structs.replace(
            self.settings,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            management_host="127.0.0.1",
            management_port=slot.management_port,
            grpc_management_port=slot.grpc_management_port,
            management_token=self.token,
            # Kept at N: the gRPC listener turns SO_REUSEPORT on only when workers > 1.
            workers=self.settings.workers,
        )
        spec = WorkerSpec(index=slot.index, supervisor_pid=os.getpid(), settings=settings)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _WORKER_CODE, stdin=asyncio.subprocess.PIPE
        )
        assert process.stdin is not None
        process.stdin.write(encode_spec(spec))
        with contextlib.suppress(ConnectionError):  # it died at once; _wait sees its exit code
            await process.stdin.drain()
        process.stdin.close()
        slot.process = process
        log.info("worker %d started (pid %d)", slot.index, process.pid)
        return process

    async def _wait(self, process: asyncio.subprocess.Process) -> int:
        """The worker's exit code; on stopping, SIGTERM first, then SIGKILL after the grace."""
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not exited.done():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(exited), self.settings.graceful_timeout_s + 10)
            except TimeoutError:
                log.error("worker pid %d did not stop in time; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        return await exited

    async def _await_started(self, slot: _Slot, process: asyncio.subprocess.Process) -> None:
        """Wait until the worker answers on its management port and has loaded its models, copy
        a sibling's unloads, then let management requests through to it.

        Waiting for the initial loading first means that a load or unload sent through the
        supervisor never races the worker's own start-up load of the same model.
        """
        deadline = time.monotonic() + _START_TIMEOUT_S
        while process.returncode is None:
            try:
                rows = await self._index(slot)
                if time.monotonic() > deadline or not any(row.get("state") in ("UNKNOWN", "LOADING") for row in rows):
                    break
            except (httpx.HTTPError, msgspec.DecodeError):
                pass  # not listening yet
            await asyncio.sleep(0.1)
        else:
            return
        try:
            await self._mirror_unloads(slot)
        except (httpx.HTTPError, msgspec.DecodeError):
            log.warning("worker %d: could not copy the unloaded models of a sibling", slot.index)
        slot.started.set()

    async def _mirror_unloads(self, slot: _Slot) -> None:
        sibling = next((s for s in self.slots if s is not slot and s.started.is_set()), None)
        if sibling is None:
            return
        for row in await self._index(sibling):
            if row.get("reason") == "unloaded" and isinstance(row.get("name"), str):
                log.info("worker %d: unloading %s as its siblings did", slot.index, row["name"])
                await self._http().post(
                    f"{slot.management_url}/v2/repository/models/{row['name']}/unload",
                    headers=self._auth(),
                )

    async def _index(self, slot: _Slot) -> list[dict[str, Any]]:
        answer = await self._http().post(
            slot.management_url + "/v2/repository/index", headers=self._auth(), timeout=5.0
        )
        answer.raise_for_status()
        rows = msgspec.json.decode(answer.content)
        return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []

    # -- management -----------------------------------------------------------------------------

    async def _start_listeners(self, listeners: list[Any]) -> None:
        """Open the management ports (appending to ``listeners``); raises OSError when taken."""
        settings = self.settings
        if settings.management_port is not None:
            # Bound here rather than by uvicorn, so that a taken port is an error we report
            # (uvicorn would exit the process from inside its task).
            sock = socket.create_server((settings.management_host, settings.management_port), backlog=128)
            server = _uvicorn(ManagementProxy(self), settings.management_host, settings.management_port, settings)
            listeners.append((server, asyncio.create_task(server.serve([sock]))))
        if settings.grpc_management_port is not None:
            listeners.append(await _start_grpc_proxy(self))

    async def _stop_listeners(self, listeners: list[Any]) -> None:
        for listener in listeners:
            if isinstance(listener, tuple):
                server, task = listener
                server.should_exit = True
                await asyncio.gather(task, return_exceptions=True)
            else:
                await listener.stop(1.0)

    def authorized(self, given: bytes | None) -> bool:
        return given is not None and hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _http(self) -> httpx.AsyncClient:
        assert self._client is not None
        return self._client

    async def started_slots(self, slots: list[_Slot]) -> list[_Slot]:
        """``slots`` once each answers on its management port.

        Raises TimeoutError when one does not within _START_TIMEOUT_S, or at once when the
        supervisor is stopping (so that shutdown never waits for a worker that will not come).
        """
        deadline = time.monotonic() + _START_TIMEOUT_S
        for slot in slots:
            if slot.started.is_set():
                continue
            waiters = [asyncio.ensure_future(e.wait()) for e in (slot.started, self._stop)]
            await asyncio.wait(
                waiters,
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            for waiter in waiters:
                waiter.cancel()
            if not slot.started.is_set():
                raise TimeoutError(f"worker {slot.index} is not answering")
        return slots

    async def forward(
        self, slots: list[_Slot], method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> list[httpx.Response]:
        """Send one management request to each of ``slots`` at once; their answers in order."""
        await self.started_slots(slots)
        client = self._http()
        return list(
            await asyncio.gather(
                *(client.request(method, slot.management_url + path, content=body, headers=headers) for slot in slots)
            )
        )

    def first_started(self) -> list[_Slot]:
        started = [slot for slot in self.slots if slot.started.is_set()]
        return started[:1] or self.slots[:1]


class ManagementProxy:
    """The supervisor's REST management listener (an ASGI app)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        try:
            await self._handle(scope, receive, send)
        except ClientGone:
            pass
        except (TimeoutError, httpx.HTTPError) as exc:
            log.error("management request could not reach every worker: %s", type(exc).__name__)
            await respond_error(send, 503, "a worker is not reachable; retry", [(b"retry-after", b"1")])

    async def _handle(self, scope: Scope, receive: Any, send: Any) -> None:
        parts = scope["path"].strip("/").split("/")
        if parts[:2] == ["v2", "health"]:
            await respond(send, 200, b"")
            return
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _FORWARDED_REQUEST_HEADERS}
        if not self._supervisor.authorized(headers.get("authorization", "").encode("latin-1") or None):
            # Checked here too, so that an unauthenticated request is not multiplied by N.
            await respond_error(
                send,
                401,
                "the management API needs 'Authorization: Bearer <token>'",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        body = await read_body(scope, receive, _MAX_MANAGEMENT_BODY)
        fan_out = (
            scope["method"] == "POST"
            and len(parts) == 5
            and parts[:3] == ["v2", "repository", "models"]
            and parts[4] in _FANNED_OUT
        )
        supervisor = self._supervisor
        slots = supervisor.slots if fan_out else supervisor.first_started()
        answers = await supervisor.forward(slots, scope["method"], scope["path"], body, headers)
        chosen = next((a for a in answers if a.status_code >= 300), answers[0])
        if chosen.status_code >= 300 and fan_out:
            failed = [s.index for s, a in zip(slots, answers, strict=True) if a.status_code >= 300]
            log.warning("%s of %s failed on workers %s", parts[4], parts[3], failed)
        extra: Headers = [
            (k.encode(), v.encode("latin-1"))
            for k, v in chosen.headers.items()
            if k in _FORWARDED_RESPONSE_HEADERS and k != "content-type"
        ]
        content_type = chosen.headers.get("content-type", "application/json").encode("latin-1")
        await respond(send, chosen.status_code, chosen.content, content_type, extra)


# -- gRPC management proxy ------------------------------------------------------------------------


async def _start_grpc_proxy(supervisor: Supervisor) -> Any:
    """A gRPC server that forwards each unary call as raw bytes: load/unload to every worker,
    anything else to one. Messages are never decoded, so it needs no generated stubs."""
    import grpc
    from grpc import aio

    settings = supervisor.settings
    channels: dict[int, Any] = {}

    def channel(slot: _Slot) -> Any:
        port = slot.grpc_management_port
        assert port is not None
        found = channels.get(port)
        if found is None:
            found = channels[port] = aio.insecure_channel(f"127.0.0.1:{port}")
        return found

    class FanOut(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: Any) -> Any:
            method: str = details.method
            fan_out = method.rsplit("/", 1)[-1] in _GRPC_FANNED_OUT

            async def handle(request: bytes, context: Any) -> bytes:
                if fan_out:
                    # Checked here too, so that an unauthenticated call is not multiplied by N.
                    given = dict(context.invocation_metadata()).get("authorization")
                    if not supervisor.authorized(given.encode() if given else None):
                        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "the management API needs a token")
                metadata = [
                    (k, v)
                    for k, v in context.invocation_metadata()
                    if not k.startswith((":", "grpc-")) and k not in ("user-agent", "te", "content-type")
                ]
                slots = supervisor.slots if fan_out else supervisor.first_started()
                try:
                    await supervisor.started_slots(slots)
                except TimeoutError:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "a worker is not reachable; retry")
                calls = [
                    channel(slot).unary_unary(method)(
                        request, metadata=metadata, timeout=_LOAD_TIMEOUT_S, wait_for_ready=True
                    )
                    for slot in slots
                ]
                answers = await asyncio.gather(*calls, return_exceptions=True)
                for answer in answers:
                    if isinstance(answer, aio.AioRpcError):
                        await context.abort(answer.code(), answer.details() or "")
                    if isinstance(answer, BaseException):
                        raise answer
                first = answers[0]
                assert isinstance(first, bytes)
                return first

            return grpc.unary_unary_rpc_method_handler(handle)

    server = aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((FanOut(),))
    address = f"{settings.management_host}:{settings.grpc_management_port}"
    try:
        server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"gRPC cannot listen on {address}") from exc
    await server.start()
    return server


# -- helpers ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _new_token() -> str:
    token = secrets.token_urlsafe(24)
    log.warning(
        "no management token configured; generated one for this run",
        extra={"management_token": token},
    )
    return token


def _run_loop(coro: Any) -> int:
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return int(runner.run(coro))
