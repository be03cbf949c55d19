"""GrpcListener in-process: the real data plane and grpc.aio server, a grpc.aio client."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from pinnace.core.dataplane import DataPlane, scheduler_factory
from pinnace.errors import InternalError
from pinnace.repository import ModelRepository
from pinnace.server.grpc.server import GrpcListener
from pinnace.settings import ServerSettings
from tests.models import write_python_model
from tests.servers import free_port

SERVICE = "/inference.GRPCInferenceService/"

SLEEPY = """
    import pathlib, time

    class Model:
        def predict(self, inputs):
            pathlib.Path({marker!r}).touch()
            time.sleep(float(inputs["x"].ravel()[0]))
            return {{"y": inputs["x"]}}
"""
"""Sleeps as many seconds as its input says, after touching a marker file."""


class Recorder:
    """A RequestListener that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def request_finished(self, *args: Any) -> None:
        self.calls.append(args)


class Running:
    def __init__(self, listener: GrpcListener, settings: ServerSettings, recorder: Recorder, marker: Path) -> None:
        self.listener = listener
        self.marker = marker
        self.settings = settings
        self.recorder = recorder
        self.data = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_port}")
        self.management = grpc.aio.insecure_channel(f"127.0.0.1:{settings.grpc_management_port}")

    async def call(self, rpc: str, request: Any, response: Any, *, management: bool = False, **kw: Any) -> Any:
        channel = self.management if management else self.data
        method = channel.unary_unary(
            SERVICE + rpc, request_serializer=type(request).SerializeToString,
            response_deserializer=response.FromString,
        )  # fmt: skip
        return await method(request, timeout=kw.pop("timeout", 10), **kw)


def sleepy_request(seconds: float) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name="sleepy",
        inputs=[{"name": "x", "datatype": "FP32", "shape": [1]}],
        raw_input_contents=[np.array([seconds], np.float32).tobytes()],
    )


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    repo = tmp_path / "models"
    write_python_model(
        repo,
        "sleepy",
        SLEEPY.format(marker=str(tmp_path / "started")),
        inputs=[{"name": "x", "datatype": "FP32", "shape": [1]}],
        outputs=[{"name": "y", "datatype": "FP32", "shape": [1]}],
        warmup=False,
    )
    repository = ModelRepository(repo, scheduler_factory())
    await repository.load_all()
    settings = ServerSettings(repository=repo, grpc_port=free_port(), grpc_management_port=free_port())
    recorder = Recorder()
    listener = GrpcListener(DataPlane(repository), settings, token="t0ken", listener=recorder)
    await listener.start()
    state = Running(listener, settings, recorder, tmp_path / "started")
    try:
        yield state
    finally:
        await state.data.close()
        await state.management.close()
        await listener.stop(0)
        await repository.unload_all()


async def test_stop_drains_in_flight_calls(running: Running) -> None:
    call = asyncio.ensure_future(running.call("ModelInfer", sleepy_request(0.5), pb.ModelInferResponse))
    async with asyncio.timeout(10):
        while not running.marker.exists():
            await asyncio.sleep(0.01)
    await running.listener.stop(10)
    response = await call
    assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [0.5]


async def test_listener_hears_every_rpc_with_its_status(running: Running) -> None:
    await running.call("ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.call("ModelMetadata", pb.ModelMetadataRequest(name="nope"), pb.ModelMetadataResponse)
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    await running.call("ModelInfer", sleepy_request(0.0), pb.ModelInferResponse)
    seen = [(c[0], c[1], c[2], c[4]) for c in running.recorder.calls]
    assert seen == [
        ("grpc", "ServerLive", "", grpc.StatusCode.OK.value[0]),
        ("grpc", "ModelMetadata", "nope", grpc.StatusCode.NOT_FOUND.value[0]),
        ("grpc", "ModelInfer", "sleepy", grpc.StatusCode.OK.value[0]),
    ]


async def test_an_expired_deadline_is_reported_as_such(running: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.call("ModelInfer", sleepy_request(0.5), pb.ModelInferResponse, timeout=0.1)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    # The server records the call when its handler ends, which the client need not wait for.
    for _ in range(500):
        if running.recorder.calls and running.recorder.calls[-1][1] == "ModelInfer":
            break
        await asyncio.sleep(0.01)
    assert running.recorder.calls[-1][4] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


async def test_management_listener_needs_the_token(running: Running) -> None:
    index = pb.RepositoryIndexRequest()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.call("RepositoryIndex", index, pb.RepositoryIndexResponse, management=True)
    assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
    reply = await running.call(
        "RepositoryIndex", index, pb.RepositoryIndexResponse, management=True,
        metadata=(("authorization", "Bearer t0ken"),),
    )  # fmt: skip
    assert [m.name for m in reply.models] == ["sleepy"]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.call("ModelInfer", sleepy_request(0.0), pb.ModelInferResponse, management=True)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED


async def test_a_busy_port_is_an_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = ServerSettings(repository=tmp_path, grpc_port=port, grpc_management_port=None)
        repository = ModelRepository(tmp_path, scheduler_factory())
        listener = GrpcListener(DataPlane(repository), settings, token="t", listener=None)
        with pytest.raises(InternalError, match="cannot listen for gRPC"):
            await listener.start()
        await listener.stop(0)


async def test_calls_are_traced_as_children_of_their_traceparent(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from pinnace.observability.tracing import Tracing

    exporter = InMemorySpanExporter()
    tracing = Tracing(exporter)
    port = free_port()
    settings = ServerSettings(repository=tmp_path, grpc_port=port, grpc_management_port=None)
    repository = ModelRepository(tmp_path, scheduler_factory())
    listener = GrpcListener(DataPlane(repository), settings, token="t", listener=None, tracing=tracing)
    await listener.start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            live = channel.unary_unary(
                SERVICE + "ServerLive",
                request_serializer=pb.ServerLiveRequest.SerializeToString,
                response_deserializer=pb.ServerLiveResponse.FromString,
            )
            metadata = (("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),)
            assert (await live(pb.ServerLiveRequest(), metadata=metadata, timeout=10)).live
    finally:
        await listener.stop(0)
        tracing.provider.force_flush()
    (span,) = exporter.get_finished_spans()
    assert span.name == "ServerLive"
    assert format(span.context.trace_id, "032x") == trace_id
    tracing.provider.shutdown()


@pytest.mark.parametrize(
    ("parameter", "code"),
    [
        # Not a positive number: refused as the client's error, not the server's.
        (pb.InferParameter(double_param=float("nan")), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.InferParameter(double_param=-1.0), grpc.StatusCode.INVALID_ARGUMENT),
        # Past the manifest's maximum, however far: capped to it, and answered.
        (pb.InferParameter(double_param=1e300), grpc.StatusCode.OK),
        (pb.InferParameter(double_param=float("inf")), grpc.StatusCode.OK),
    ],
)
async def test_a_timeout_parameter_is_checked_and_capped(
    running: Running, parameter: pb.InferParameter, code: grpc.StatusCode
) -> None:
    request = sleepy_request(0.0)
    request.parameters["timeout"].CopyFrom(parameter)
    if code is grpc.StatusCode.OK:
        response = await running.call("ModelInfer", request, pb.ModelInferResponse)
        assert np.frombuffer(response.raw_output_contents[0], np.float32).tolist() == [0.0]
        return
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await running.call("ModelInfer", request, pb.ModelInferResponse)
    assert info.value.code() is code
    assert "timeout" in (info.value.details() or "")
