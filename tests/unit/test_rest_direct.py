"""The data listener's protocol serves inference requests itself, without the ASGI cycle:
same answers as the ASGI route, in order, within the same limits, told to the same listener.

Each test runs the real listener (uvicorn, our protocol, the REST app, a loaded repository) in
its own event loop on a loopback port, and speaks raw HTTP/1.1 to it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import socket
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from pinnace import serving
from pinnace.core.stats import CURRENT_RECORD, RequestRecord
from pinnace.errors import InvalidInputError
from pinnace.observability.setup import build_observability
from pinnace.server.app import _uvicorn, build_dataplane
from pinnace.server.rest import direct
from pinnace.server.rest.app import RestApp
from pinnace.server.rest.direct import DirectInferenceProtocol
from pinnace.serving import CoalescingHttpToolsProtocol
from pinnace.settings import ServerSettings
from tests.conftest import EXAMPLES
from tests.models import write_python_model

IRIS = json.dumps(
    {"id": "r1", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
).encode()
CAP = 4096

SLOW = """
    import time

    class Model:
        def predict(self, inputs):
            x = inputs["x"]
            if x[0, 0] < 0:
                time.sleep(0.3)
            return {"y": x * 2}
"""
"""Doubles its input; a negative first value makes it take 0.3 s (a request still in flight)."""


def slow_body(first: float) -> bytes:
    return json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [first]}]}).encode()


class Recorder:
    """The request listener: what each finished request was, with the data plane's record."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, int, RequestRecord | None]] = []

    def request_finished(
        self,
        protocol: str,
        route: str,
        model: str,
        version: str,
        status: int,
        seconds: float,
        scope: dict[str, Any] | None,
    ) -> None:
        self.finished.append((route, status, CURRENT_RECORD.get()))


class CountingApp(RestApp):
    """The REST app, counting the requests that reach it through ASGI."""

    asgi_calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.asgi_calls += 1
        await super().__call__(scope, receive, send)


class Listener:
    def __init__(self, app: CountingApp, recorder: Recorder, port: int, server: Any) -> None:
        self.app, self.recorder, self.port, self.server = app, recorder, port, server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def finished(self, count: int) -> None:
        """Wait (up to 5 s) until the listener has heard of ``count`` requests."""
        for _ in range(500):
            if len(self.recorder.finished) >= count:
                return
            await asyncio.sleep(0.01)

    async def exchange(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        reader, writer = await self.connect()
        writer.write(request)
        try:
            return await read_response(reader)
        finally:
            writer.close()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(EXAMPLES / "iris", models / "iris")
    write_python_model(
        models,
        "slow",
        SLOW,
        inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        outputs=[{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    )
    return models


@asynccontextmanager
async def listening(
    repo: Path, protocol: type[asyncio.Protocol] = DirectInferenceProtocol, keep_alive_s: float | None = None
) -> AsyncIterator[Listener]:
    settings = ServerSettings(repository=repo, http_port=0)
    obs = build_observability(settings)
    dataplane = build_dataplane(settings, obs)
    recorder = Recorder()
    app = CountingApp(dataplane, max_body_bytes=CAP, max_elements=1 << 20, listener=recorder)
    await dataplane.repository.load_all()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = _uvicorn(app, "127.0.0.1", 0, settings, protocol)
    if keep_alive_s is not None:
        server.config.timeout_keep_alive = keep_alive_s  # type: ignore[assignment]
    serving = asyncio.create_task(server.serve([sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield Listener(app, recorder, sock.getsockname()[1], server)
    finally:
        server.should_exit = True
        await serving
        await dataplane.repository.unload_all()
        obs.close()


def post(path: str, body: bytes, *extra: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: test", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    body = await reader.readexactly(int(headers[b"content-length"]))
    return status, headers, body


async def test_inference_skips_asgi_and_answers_as_asgi_does(repo: Path) -> None:
    requests = [
        post("/v2/models/iris/infer", IRIS),
        post("/v2/models/iris/versions/1/infer", IRIS),
        post("/v2/models/iris/infer", b"{oops"),
        post("/v2/models/iris/infer", IRIS.replace(b'"FP32"', b'"FP64"')),
        post("/v2/models/nope/infer", IRIS),
        post("/v2/models/iris/versions/7/infer", IRIS),
        post("/v2/models/iris/versions//infer", IRIS),  # no version named: not the default one
        post("/v2/models/iris/infer", IRIS, "Content-Type: application/json", "X-Request-Id: abc"),
        post("/v2/models/iris/infer", b"x" * (CAP + 1)),
    ]
    # The binary extension, both ways: outputs asked for as binary.
    binary_json = json.dumps(
        {
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    binary = binary_json + bytes(16)
    requests.append(post("/v2/models/iris/infer", binary, f"Inference-Header-Content-Length: {len(binary_json)}"))
    answers = {}
    for protocol in (DirectInferenceProtocol, CoalescingHttpToolsProtocol):
        async with listening(repo, protocol) as listener:
            answers[protocol] = [await listener.exchange(request) for request in requests]
            through_asgi = listener.app.asgi_calls
        # The path without a version is no route at all: ASGI answers it, as any such path.
        assert through_asgi == (1 if protocol is DirectInferenceProtocol else len(requests))
    direct_answers, asgi_answers = answers[DirectInferenceProtocol], answers[CoalescingHttpToolsProtocol]
    assert [status for status, _, _ in direct_answers] == [200, 200, 400, 400, 404, 404, 404, 200, 413, 200]
    assert direct_answers == asgi_answers
    assert json.loads(direct_answers[0][2])["outputs"][0]["data"] == [0]
    assert direct_answers[-1][1][b"content-type"] == b"application/octet-stream"


async def test_other_routes_still_go_through_asgi(repo: Path) -> None:
    async with listening(repo) as listener:
        status, _, _ = await listener.exchange(b"GET /v2/health/ready HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 200
        status, _, _ = await listener.exchange(b"GET /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\n\r\n")
        assert status == 405
        # Expect: 100-continue is ASGI's to answer.
        reader, writer = await listener.connect()
        head = post("/v2/models/iris/infer", IRIS, "Expect: 100-continue")
        writer.write(head[: -len(IRIS)])
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(IRIS)
        status, _, _ = await read_response(reader)
        writer.close()
        assert status == 200
        assert listener.app.asgi_calls == 3


async def test_pipelined_requests_are_answered_in_order(repo: Path) -> None:
    async with listening(repo) as listener:
        reader, writer = await listener.connect()
        # A slow request, a fast one and a GET in one write: the fast one must wait its turn.
        writer.write(
            post("/v2/models/slow/infer", slow_body(-1.0))
            + post("/v2/models/slow/infer", slow_body(4.0))
            + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n"
            + post("/v2/models/iris/infer", IRIS)
        )
        answers = [await read_response(reader) for _ in range(4)]
        writer.close()
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert json.loads(answers[0][2])["outputs"][0]["data"] == [-2.0]
    assert json.loads(answers[1][2])["outputs"][0]["data"] == [8.0]
    assert answers[2][2] == b""
    assert json.loads(answers[3][2])["model_name"] == "iris"


async def test_concurrent_requests_keep_their_own_records(repo: Path) -> None:
    async with listening(repo) as listener:
        answers = await asyncio.gather(
            listener.exchange(post("/v2/models/slow/infer", slow_body(-1.0))),
            *(listener.exchange(post("/v2/models/iris/infer", IRIS)) for _ in range(5)),
        )
    assert [status for status, _, _ in answers] == [200] * 6
    records = [record for _, _, record in listener.recorder.finished]
    assert all(record is not None and record.batch_size >= 1 for record in records)
    assert len({id(record) for record in records}) == 6
    assert sorted(record.model for record in records if record is not None) == ["iris"] * 5 + ["slow"]


async def test_chunked_body_and_the_body_limit(repo: Path) -> None:
    async with listening(repo) as listener:
        chunked = (
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n" % (10, IRIS[:10])
            + b"%x\r\n%s\r\n" % (len(IRIS) - 10, IRIS[10:])
            + b"0\r\n\r\n"
        )
        status, _, body = await listener.exchange(chunked)
        assert status == 200 and json.loads(body)["id"] == "r1"

        # A declared length over the limit is refused before any of the body is sent.
        reader, writer = await listener.connect()
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n")
        status, _, body = await read_response(reader)
        writer.close()
        assert status == 413 and b"exceeds the limit of 4096" in body

        # A chunked body is refused as soon as it crosses the limit.
        reader, writer = await listener.connect()
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"%x\r\n%s\r\n" % (CAP + 1, b"x" * (CAP + 1)))
        status, _, body = await read_response(reader)
        writer.close()
        assert status == 413
    assert [status for _, status, _ in listener.recorder.finished] == [200, 413, 413]


async def test_a_body_that_stalls_is_refused_and_the_connection_closed(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(direct, "BODY_TIMEOUT_S", 0.2)
    async with listening(repo) as listener:
        reader, writer = await listener.connect()
        writer.write(post("/v2/models/iris/infer", IRIS)[:-5])
        status, headers, body = await read_response(reader)
        assert status == 400 and b"not received within 0.2s" in body
        assert headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_head_without_its_body_is_refused_on_the_asgi_route_too(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind Expect: 100-continue (or pipelined), a request goes through ASGI: a client that
    then sends nothing gets its 400 there too, rather than holding the connection for ever."""
    monkeypatch.setattr(serving, "BODY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(serving, "_SWEEP_S", 0.05)
    async with listening(repo) as listener:
        reader, writer = await listener.connect()
        writer.write(
            b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 110\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert b" 100 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status, _, body = await read_response(reader)
        writer.close()
    assert status == 400 and b"not received within 0.2s" in body
    assert listener.app.asgi_calls == 1


async def test_read_body_refuses_a_head_without_its_body_and_passes_other_cancellations_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the gateway and the management listeners read bodies with."""
    monkeypatch.setattr(serving, "BODY_TIMEOUT_S", 0.1)
    monkeypatch.setattr(serving, "_SWEEP_S", 0.02)
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {}

    with pytest.raises(InvalidInputError, match=r"not received within 0\.1s"):
        await asyncio.wait_for(serving.read_body(receive, 100), 10)
    reading = asyncio.ensure_future(serving.read_body(receive, 100))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


async def test_an_early_refusal_is_recorded_without_an_earlier_requests_record(repo: Path) -> None:
    """A read resumed from a pipelined ASGI request's task runs (on asyncio's own loop) in a
    copy of that task's context; a request refused from its head there has no record."""
    async with listening(repo) as listener:
        reader, writer = await listener.connect()
        writer.write(post("/v2/models/iris/infer", IRIS) + post("/v2/models/slow/infer", slow_body(-1.0)))
        await asyncio.sleep(0.1)
        writer.write(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        for _ in range(3):
            await read_response(reader)
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (CAP + 1))
        assert (await read_response(reader))[0] == 413
        writer.close()
        await listener.finished(4)
    _, status, record = listener.recorder.finished[-1]
    assert status == 413
    assert record is None, f"recorded with {record.model!r}'s record"


async def test_writes_after_the_client_has_gone_are_dropped() -> None:
    """uvicorn marks only a connection's latest cycle disconnected: an earlier pipelined one
    still sends, and uvloop's transport raises on a write after close."""

    class RaisingWhenClosed(StubTransport):
        def write(self, data: bytes | bytearray | memoryview) -> None:
            if self.closed:
                raise RuntimeError("the handler is closed")
            super().write(data)

    stub = RaisingWhenClosed()
    transport = serving._CoalescingTransport(stub, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    stub.close()
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    transport.write_whole(b"HTTP/1.1 200 OK\r\n\r\n", b"body")
    await asyncio.sleep(0)
    assert stub.written == b""


async def test_http_1_0_closes_after_the_answer(repo: Path) -> None:
    async with listening(repo) as listener:
        reader, writer = await listener.connect()
        writer.write(post("/v2/models/iris/infer", IRIS, version="1.0"))
        status, headers, _ = await read_response(reader)
        assert status == 200 and headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_client_gone_before_its_body_is_recorded_as_499(repo: Path) -> None:
    async with listening(repo) as listener:
        _, writer = await listener.connect()
        writer.write(post("/v2/models/iris/infer", IRIS)[:-5])
        await asyncio.sleep(0.05)
        writer.close()
        await listener.finished(1)
    assert [(route, status) for route, status, _ in listener.recorder.finished] == [
        ("/v2/models/{model}/infer", 499)
    ]


async def test_an_answer_for_a_client_gone_meanwhile_is_dropped(repo: Path) -> None:
    async with listening(repo) as listener:
        _, writer = await listener.connect()
        writer.write(post("/v2/models/slow/infer", slow_body(-1.0)))
        await asyncio.sleep(0.05)
        writer.close()
        await listener.finished(1)
        # The listener stays healthy for the next client.
        status, _, _ = await listener.exchange(post("/v2/models/iris/infer", IRIS))
    assert status == 200
    assert [status for _, status, _ in listener.recorder.finished] == [200, 200]


async def test_idle_connections_close_after_the_keep_alive_timeout(repo: Path) -> None:
    async with listening(repo, keep_alive_s=0.3) as listener:
        busy_reader, busy_writer = await listener.connect()
        idle_reader, idle_writer = await listener.connect()
        idle_writer.write(post("/v2/models/iris/infer", IRIS))
        assert (await read_response(idle_reader))[0] == 200
        # A connection with a request every 0.1 s outlives the timeout; the idle one does not.
        for _ in range(6):
            busy_writer.write(post("/v2/models/iris/infer", IRIS))
            assert (await read_response(busy_reader))[0] == 200
            await asyncio.sleep(0.1)
        assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        busy_writer.write(post("/v2/models/iris/infer", IRIS))
        assert (await read_response(busy_reader))[0] == 200
        assert await asyncio.wait_for(busy_reader.read(), 5) == b""  # then it idles out too
        busy_writer.close()
        idle_writer.close()


async def test_a_client_that_pipelines_without_reading_gets_every_answer_in_order(repo: Path) -> None:
    """3,000 requests in one write, nothing read until all are sent: the server's send buffer
    fills, and every answer still arrives, once, in order."""
    bodies = [
        json.dumps(
            {"id": str(i), "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [i, 0, 0, 0]}]}
        ).encode()
        for i in range(3000)
    ]
    async with listening(repo) as listener:
        assert (await listener.exchange(post("/v2/models/iris/infer", IRIS)))[0] == 200  # warm
        reader, writer = await listener.connect()
        writer.write(b"".join(post("/v2/models/iris/infer", body) for body in bodies))
        await asyncio.sleep(0.5)  # the server's send buffer fills while nothing is read
        answers = [await read_response(reader) for _ in bodies]
        writer.close()
        # Served both ways: directly while nothing was in flight, through ASGI when pipelined
        # behind a request in flight (uvicorn then stops reading until it is answered).
        assert 0 < listener.app.asgi_calls < len(bodies)
    assert [json.loads(body)["id"] for _, _, body in answers] == [str(i) for i in range(3000)]
    assert {status for status, _, _ in answers} == {200}


async def test_a_request_read_with_the_answer_before_it_is_not_cut_off_by_keep_alive(repo: Path) -> None:
    """The 404 is answered inside the read that also brings the next request's head: the
    connection is busy from then on, however long the next request takes."""
    async with listening(repo, keep_alive_s=0.2) as listener:
        reader, writer = await listener.connect()
        writer.write(post("/v2/models/nope/infer", IRIS) + post("/v2/models/slow/infer", slow_body(-1.0)))
        first, second = await read_response(reader), await read_response(reader)
        # And one whose body is still coming when the keep-alive time has passed.
        request = post("/v2/models/iris/infer", IRIS)
        writer.write(post("/v2/models/nope/infer", IRIS) + request[:-5])
        third = await read_response(reader)
        await asyncio.sleep(0.5)
        writer.write(request[-5:])
        fourth = await read_response(reader)
        writer.close()
    assert [first[0], second[0], third[0], fourth[0]] == [404, 200, 404, 200]


@pytest.mark.parametrize("protocol", [DirectInferenceProtocol, CoalescingHttpToolsProtocol])
async def test_a_request_pipelined_behind_an_inference_starts_with_no_record(
    repo: Path, protocol: type[asyncio.Protocol]
) -> None:
    """Through either route: uvicorn starts a pipelined request from inside the answer to the
    one before it, which must not hand it its record (metrics would count it for that model)."""
    async with listening(repo, protocol) as listener:
        reader, writer = await listener.connect()
        writer.write(post("/v2/models/slow/infer", slow_body(-1.0)) + b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n")
        await read_response(reader)
        await read_response(reader)
        writer.close()
    (infer_route, _, infer_record), (live_route, _, live_record) = listener.recorder.finished
    assert infer_route == "/v2/models/{model}/infer" and infer_record is not None
    assert live_route == "/v2/health/live" and live_record is None


async def test_a_body_refused_part_way_is_not_kept(repo: Path) -> None:
    async with listening(repo) as listener:
        reader, writer = await listener.connect()
        writer.write(b"POST /v2/models/iris/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            writer.write(b"%x\r\n%s\r\n" % (CAP // 2, b"x" * (CAP // 2)))
        status, _, _ = await read_response(reader)
        writer.write(b"1\r\nx\r\n")  # the client goes on sending the refused body
        await asyncio.sleep(0.1)
        (protocol,) = listener.server.server_state.connections
        assert status == 413
        assert protocol.cycle.response_complete and protocol.cycle.chunks == []
        writer.write(b"0\r\n\r\n" + post("/v2/models/iris/infer", IRIS))
        assert (await read_response(reader))[0] == 200  # then the connection serves on
        writer.close()


async def test_a_failing_listener_leaves_one_answer_and_the_connection_open(
    repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: Any) -> None:
        raise RuntimeError("listener failed")

    async with listening(repo) as listener:
        listener.recorder.request_finished = fail  # type: ignore[method-assign]
        reader, writer = await listener.connect()
        writer.write(post("/v2/models/nope/infer", IRIS))
        assert (await read_response(reader))[0] == 404
        writer.write(post("/v2/models/iris/infer", IRIS))
        assert (await read_response(reader))[0] == 200
        writer.close()
    assert "request listener failed" in caplog.text


class StubTransport(asyncio.Transport):
    """What a connection's protocol writes, without a socket."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def test_requests_read_in_one_loop_step_are_started_together_once_the_reads_are_done(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[bytes] = []
    real_begin = DirectInferenceProtocol._begin

    def begin(self: DirectInferenceProtocol, request: direct.DirectRequest, body: bytes) -> None:
        started.append(body)
        real_begin(self, request, body)

    monkeypatch.setattr(DirectInferenceProtocol, "_begin", begin)
    async with listening(repo) as listener:
        config, state = listener.server.config, listener.server.server_state
        connections = []
        for first in (1.0, 2.0, -3.0):  # the last one is slow: started with the others
            protocol = DirectInferenceProtocol(config=config, server_state=state, app_state={})
            transport = StubTransport()
            protocol.connection_made(transport)
            protocol.data_received(post("/v2/models/slow/infer", slow_body(first)))
            connections.append((protocol, transport))
        assert started == []  # all three reads first
        await asyncio.sleep(0)  # the loop step ends: one callback starts all three
        assert started == [slow_body(1.0), slow_body(2.0), slow_body(-3.0)]
        await listener.finished(3)
        for protocol, _ in connections:
            protocol.connection_lost(None)  # else shutting down waits for them
    answers = [transport.written.split(b"\r\n\r\n", 1) for _, transport in connections]
    assert [head.split(b" ")[1] for head, _ in answers] == [b"200"] * 3
    assert [json.loads(body)["outputs"][0]["data"] for _, body in answers] == [[2.0], [4.0], [-6.0]]
    assert listener.app.asgi_calls == 0


async def test_each_request_starts_in_a_fresh_context_whatever_the_read_ran_in(repo: Path) -> None:
    """The step's callback runs in the context of the read that scheduled it, which may still
    hold another request's record: no request may report with it."""
    async with listening(repo) as listener:
        protocol = DirectInferenceProtocol(
            config=listener.server.config, server_state=listener.server.server_state, app_state={}
        )
        protocol.connection_made(StubTransport())
        foreign = RequestRecord("slow", "1", "someone else's")
        token = CURRENT_RECORD.set(foreign)
        try:
            protocol.data_received(post("/v2/models/nope/infer", IRIS))
            protocol.data_received(post("/v2/models/iris/infer", IRIS))  # pipelined: through ASGI
        finally:
            CURRENT_RECORD.reset(token)
        await listener.finished(2)
        protocol.connection_lost(None)
    (route, status, record), (_, second_status, second_record) = listener.recorder.finished
    assert (route, status, record) == ("/v2/models/{model}/infer", 404, None)
    assert second_status == 200 and second_record is not None and second_record.request_id == "r1"


class Interrupting:
    """Stands in for a connection's protocol: records its start; one raises a BaseException."""

    def __init__(self, name: str, started: list[str], interrupt: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.name, self.started, self.interrupt = name, started, interrupt

    def _begin(self, request: object, body: bytes) -> None:
        self.started.append(self.name)
        if self.interrupt:
            raise KeyboardInterrupt


async def test_an_interrupt_while_starting_leaves_the_other_requests_to_a_later_callback() -> None:
    loop = asyncio.get_running_loop()
    raised: list[BaseException | None] = []
    loop.set_exception_handler(lambda _, context: raised.append(context.get("exception")))
    starts = direct._StepStarts.of(loop)
    started: list[str] = []
    for name in ("a", "b", "c"):
        starts.add(Interrupting(name, started, interrupt=name == "a"), object(), b"")  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        starts._start_all()
    assert started == ["a"]
    await asyncio.sleep(0)
    assert started == ["a", "b", "c"]


def test_a_loop_closed_with_requests_staged_is_let_go() -> None:
    """Staged requests hold their protocols, and those their loop: the loop's queue is dropped
    once the loop has closed, when the next loop's queue is made."""

    class Staging:
        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop = loop

    loop = asyncio.new_event_loop()
    gone = weakref.ref(loop)
    direct._StepStarts.of(loop).add(Staging(loop), object(), b"body")  # type: ignore[arg-type]
    loop.close()  # before its callback ran
    del loop
    other = asyncio.new_event_loop()
    direct._StepStarts.of(other)
    gc.collect()
    assert gone() is None
    other.close()
