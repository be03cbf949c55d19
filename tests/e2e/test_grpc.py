"""The gRPC endpoint through tritonclient.grpc against a real ``pinnace serve`` process."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from sklearn.datasets import load_iris
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import EXAMPLES
from tests.models import write_python_model
from tests.servers import ServerProcess, running_server

MESSAGE_LIMIT = 4 * 1024 * 1024

pytestmark = pytest.mark.e2e

IRIS_X, _ = load_iris(return_X_y=True)

ECHO = """
    class Model:
        def predict(self, inputs):
            return dict(inputs)
"""
"""No signature: any inputs, returned under the same names."""

BATCH_SIZE = """
    import numpy as np

    class Model:
        def predict(self, inputs):
            rows = len(inputs["x"])
            return {"batch": np.full(rows, rows, dtype=np.int64)}
"""
"""Answers, per row, the size of the batch the row was executed in."""

SLOW = """
    import time

    class Model:
        def predict(self, inputs):
            time.sleep(float(inputs["x"].ravel()[0]))
            return {"y": inputs["x"]}
"""
"""Sleeps as many seconds as its input says."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("grpc") / "models"
    shutil.copytree(EXAMPLES / "iris", repo / "iris")
    write_python_model(repo, "echo", ECHO, inputs=[], outputs=[], warmup=False)
    # Two rows close a batch; a lone request would wait 5 s for company and see batch 1.
    write_python_model(
        repo,
        "batchsize",
        BATCH_SIZE,
        inputs=[{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        outputs=[{"name": "batch", "datatype": "INT64", "shape": [-1]}],
        batching={"max_batch_size": 2, "max_queue_delay_us": 5_000_000},
        warmup=False,
    )
    write_python_model(
        repo,
        "slow",
        SLOW,
        inputs=[{"name": "x", "datatype": "FP32", "shape": [1]}],
        outputs=[{"name": "y", "datatype": "FP32", "shape": [1]}],
        instances=2,
        warmup=False,
    )
    extra = ["--grpc-max-message-bytes", str(MESSAGE_LIMIT)]
    with running_server(repo, extra=extra) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    """tritonclient's generated stub, for requests its high-level client cannot build."""
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def grpc_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def status_of(call: object) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()  # type: ignore[operator]
    return str(info.value.status())


def iris_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(EXAMPLES / "iris" / "1" / "model.onnx"))
    label, proba = session.run(["label", "probabilities"], {"input": x})
    return label, proba


# -- health and metadata ---------------------------------------------------------------------


def test_health_and_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    assert not client.is_model_ready("iris", "9")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "pinnace"
    assert "model_repository" in meta["extensions"]
    model = client.get_model_metadata("iris", as_json=True)
    assert model["platform"] == "onnxruntime_onnx"
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert [o["name"] for o in model["outputs"]] == ["label", "probabilities"]


def test_model_config(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("iris").config
    assert config.name == "iris"
    assert config.max_batch_size == 64
    assert [i.name for i in config.input] == ["input"]
    assert list(config.input[0].dims) == [4]


# -- inference -------------------------------------------------------------------------------


def test_iris_with_raw_contents(client: grpcclient.InferenceServerClient) -> None:
    x = IRIS_X[::3].astype(np.float32)
    result = client.infer("iris", [grpc_input("input", x, "FP32")], request_id="req-7")
    label, proba = iris_reference(x)
    assert result.get_response().id == "req-7"
    assert result.get_response().model_version == "1"
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), proba, rtol=1e-6)


def test_iris_with_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    x = IRIS_X[:5].astype(np.float32)
    request = service_pb2.ModelInferRequest(
        model_name="iris",
        inputs=[
            {
                "name": "input",
                "datatype": "FP32",
                "shape": [5, 4],
                "contents": {"fp32_contents": x.ravel()},
            }
        ],
    )
    label, proba = iris_reference(x)
    result = grpcclient.InferResult(stub.ModelInfer(request, timeout=10))
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    # Typed contents back, when asked for on every output.
    typed = {"binary_data": service_pb2.InferParameter(bool_param=False)}
    request.outputs.add(name="label", parameters=typed)
    request.outputs.add(name="probabilities", parameters=typed)
    response = stub.ModelInfer(request, timeout=10)
    assert not response.raw_output_contents
    assert list(response.outputs[0].contents.int64_contents) == label.tolist()
    np.testing.assert_allclose(response.outputs[1].contents.fp32_contents, proba.ravel(), rtol=1e-6)


def test_every_datatype_round_trips(client: grpcclient.InferenceServerClient) -> None:
    arrays = {
        "BOOL": np.array([[True, False]]),
        "UINT8": np.array([[0, 255]], np.uint8),
        "UINT16": np.array([[0, 65535]], np.uint16),
        "UINT32": np.array([[0, 2**32 - 1]], np.uint32),
        "UINT64": np.array([[0, 2**64 - 1]], np.uint64),
        "INT8": np.array([[-128, 127]], np.int8),
        "INT16": np.array([[-32768, 32767]], np.int16),
        "INT32": np.array([[-(2**31), 2**31 - 1]], np.int32),
        "INT64": np.array([[-(2**63), 2**63 - 1]], np.int64),
        "FP16": np.array([[0.5, -65504.0]], np.float16),
        "FP32": np.array([[0.5, -1.5]], np.float32),
        "FP64": np.array([[0.5, 1e300]], np.float64),
        "BYTES": np.array([[b"", "h\u00e9llo".encode()]], dtype=object),
    }
    inputs = [grpc_input(dt, a, dt) for dt, a in arrays.items()]
    outputs = [grpcclient.InferRequestedOutput(dt) for dt in arrays]
    result = client.infer("echo", inputs, outputs=outputs)
    for datatype, array in arrays.items():
        assert result.get_output(datatype).datatype == datatype
        np.testing.assert_array_equal(result.as_numpy(datatype), array)


def test_bytes_with_typed_contents(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    words = [b"one", b"", "tr\u00e8s".encode()]
    request = service_pb2.ModelInferRequest(
        model_name="echo",
        inputs=[{"name": "s", "datatype": "BYTES", "shape": [3], "contents": {"bytes_contents": words}}],
        outputs=[{"name": "s"}],
    )
    result = grpcclient.InferResult(stub.ModelInfer(request, timeout=10))
    assert result.as_numpy("s").tolist() == words


def test_rest_and_grpc_requests_share_one_batch(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    x = np.ones((1, 1), np.float32)

    def over_grpc() -> list[int]:
        return list(client.infer("batchsize", [grpc_input("x", x, "FP32")]).as_numpy("batch").tolist())

    def over_rest() -> list[int]:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        reply = httpx.post(f"{server.url}/v2/models/batchsize/infer", json=body, timeout=30)
        reply.raise_for_status()
        return list(reply.json()["outputs"][0]["data"])

    with ThreadPoolExecutor(2) as pool:
        via_grpc, via_rest = pool.submit(over_grpc), pool.submit(over_rest)
        assert via_grpc.result() == [2]
        assert via_rest.result() == [2]


def test_statistics(client: grpcclient.InferenceServerClient) -> None:
    client.infer("iris", [grpc_input("input", IRIS_X[:3].astype(np.float32), "FP32")])
    (stats,) = client.get_inference_statistics("iris").model_stats
    assert (stats.name, stats.version) == ("iris", "1")
    assert stats.inference_count >= 3
    assert 1 <= stats.execution_count <= stats.inference_count
    everything = client.get_inference_statistics().model_stats
    assert {"iris", "echo", "batchsize", "slow"} <= {s.name for s in everything}


# -- errors ----------------------------------------------------------------------------------


def test_unknown_model_is_not_found(client: grpcclient.InferenceServerClient) -> None:
    x = grpc_input("input", np.zeros((1, 4), np.float32), "FP32")
    assert status_of(lambda: client.infer("nope", [x])) == "StatusCode.NOT_FOUND"
    assert status_of(lambda: client.get_model_metadata("nope")) == "StatusCode.NOT_FOUND"


def test_bad_shape_is_invalid_argument(client: grpcclient.InferenceServerClient) -> None:
    x = grpc_input("input", np.zeros((2, 5), np.float32), "FP32")
    with pytest.raises(InferenceServerException, match="shape") as info:
        client.infer("iris", [x])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_oversize_message_is_resource_exhausted(client: grpcclient.InferenceServerClient) -> None:
    rows = MESSAGE_LIMIT // 16 + 1  # one row past the configured message limit
    x = grpc_input("input", np.zeros((rows, 4), np.float32), "FP32")
    assert status_of(lambda: client.infer("iris", [x])) == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.is_server_live()


def test_oversize_tensor_is_resource_exhausted(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    # The shape alone is refused, before anything is allocated for it.
    request = service_pb2.ModelInferRequest(
        model_name="iris",
        inputs=[{"name": "input", "datatype": "FP32", "shape": [2**40, 4]}],
        raw_input_contents=[b""],
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request, timeout=10)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_deadline_expires(client: grpcclient.InferenceServerClient) -> None:
    x = grpc_input("x", np.array([1.0], np.float32), "FP32")
    assert status_of(lambda: client.infer("slow", [x], client_timeout=0.2)) == "StatusCode.DEADLINE_EXCEEDED"
    quick = grpc_input("x", np.array([0.0], np.float32), "FP32")
    assert client.infer("slow", [quick], client_timeout=10).as_numpy("y").tolist() == [0.0]


# -- repository (management listener) --------------------------------------------------------


def test_repository_needs_the_management_listener_and_token(
    server: ServerProcess, client: grpcclient.InferenceServerClient
) -> None:
    assert status_of(client.get_model_repository_index) == "StatusCode.NOT_FOUND"
    with grpcclient.InferenceServerClient(server.grpc_management_url) as management:
        assert management.is_server_live()
        assert status_of(management.get_model_repository_index) == "StatusCode.UNAUTHENTICATED"
        wrong = {"authorization": "Bearer wrong"}
        assert status_of(lambda: management.get_model_repository_index(headers=wrong)) == "StatusCode.UNAUTHENTICATED"


def test_repository_index_unload_and_load(server: ServerProcess, client: grpcclient.InferenceServerClient) -> None:
    auth = {"authorization": f"Bearer {server.token}"}
    with grpcclient.InferenceServerClient(server.grpc_management_url) as management:
        index = management.get_model_repository_index(headers=auth, as_json=True)["models"]
        assert {"name": "iris", "version": "1", "state": "READY"} in index
        management.unload_model("echo", headers=auth)
        assert not client.is_model_ready("echo")
        management.load_model("echo", headers=auth)
        assert client.is_model_ready("echo")
        assert status_of(lambda: management.load_model("nope", headers=auth)) == "StatusCode.NOT_FOUND"


def test_graceful_shutdown_drains_in_flight_calls(tmp_path: Path) -> None:
    started = tmp_path / "started"
    code = f"""
    import pathlib, time

    class Model:
        def predict(self, inputs):
            pathlib.Path({str(started)!r}).touch()
            time.sleep(1.0)
            return {{"y": inputs["x"]}}
    """
    repo = tmp_path / "models"
    write_python_model(
        repo,
        "slow",
        code,
        inputs=[{"name": "x", "datatype": "FP32", "shape": [1]}],
        outputs=[{"name": "y", "datatype": "FP32", "shape": [1]}],
        warmup=False,
    )
    with running_server(repo) as proc, grpcclient.InferenceServerClient(proc.grpc_url) as c:
        x = grpc_input("x", np.array([1.0], np.float32), "FP32")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(c.infer, "slow", [x], client_timeout=30)
            deadline = time.monotonic() + 30
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert started.exists(), "the request never reached the model"
            assert proc.stop() == 0  # SIGTERM while the call is in flight
            assert pending.result().as_numpy("y").tolist() == [1.0]


def test_the_documented_client_example_runs(server: ServerProcess) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "grpc_client.py"
    done = subprocess.run(
        [sys.executable, str(example), "--url", server.grpc_url],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "labels: [0, 2]" in done.stdout
    assert "unknown model: StatusCode.NOT_FOUND" in done.stdout
