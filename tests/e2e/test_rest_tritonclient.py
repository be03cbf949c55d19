"""The REST API through tritonclient.http and httpx against a real ``pinnace serve``."""

from __future__ import annotations

import httpx
import joblib
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from sklearn.datasets import load_iris
from tritonclient.utils import InferenceServerException

from tests.conftest import EXAMPLES
from tests.servers import ServerProcess

pytestmark = pytest.mark.e2e

IRIS_X, _ = load_iris(return_X_y=True)


@pytest.fixture
def client(served_examples: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{served_examples.http_port}")


def test_health_and_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "pinnace"
    assert "binary_tensor_data" in meta["extensions"]
    assert client.is_model_ready("iris")
    assert client.is_model_ready("iris", "1")
    model = client.get_model_metadata("iris")
    assert model["platform"] == "onnxruntime_onnx"
    assert model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in model["outputs"]] == ["label", "probabilities"]


def test_unknown_model_and_version(client: httpclient.InferenceServerClient) -> None:
    assert not client.is_model_ready("iris", "9")
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")


@pytest.mark.parametrize("binary", [False, True])
def test_iris_onnx_equals_onnxruntime(client: httpclient.InferenceServerClient, binary: bool) -> None:
    x = IRIS_X[::3].astype(np.float32)  # 50 rows: within max_batch_size
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=binary),
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
    ]
    result = client.infer("iris", [inp], outputs=outputs, request_id="req-7")
    session = ort.InferenceSession(str(EXAMPLES / "iris" / "1" / "model.onnx"))
    label, proba = session.run(["label", "probabilities"], {"input": x})
    assert result.get_response()["id"] == "req-7"
    np.testing.assert_array_equal(result.as_numpy("label"), label)
    np.testing.assert_allclose(result.as_numpy("probabilities"), proba, rtol=0, atol=1e-6)


def test_iris_sklearn_equals_sklearn(client: httpclient.InferenceServerClient) -> None:
    estimator = joblib.load(EXAMPLES / "iris-sklearn" / "1" / "model.joblib")
    inp = httpclient.InferInput("input", list(IRIS_X.shape), "FP64")
    inp.set_data_from_numpy(IRIS_X, binary_data=False)
    result = client.infer("iris-sklearn", [inp], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("predict"), estimator.predict(IRIS_X))
    np.testing.assert_allclose(result.as_numpy("predict_proba"), estimator.predict_proba(IRIS_X), atol=1e-12)


def test_several_inputs_and_outputs(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.full((2, 3), 2.0, dtype=np.float32)
    inputs = [httpclient.InferInput("a", [2, 3], "FP32"), httpclient.InferInput("b", [2, 3], "FP32")]
    inputs[0].set_data_from_numpy(a, binary_data=False)
    inputs[1].set_data_from_numpy(b, binary_data=True)
    only_product = [httpclient.InferRequestedOutput("product", binary_data=False)]
    result = client.infer("addmul", inputs, outputs=only_product)
    np.testing.assert_array_equal(result.as_numpy("product"), a * b)
    assert result.as_numpy("sum") is None
    both = client.infer("addmul", inputs)
    np.testing.assert_array_equal(both.as_numpy("sum"), a + b)


def test_mlp_equals_onnxruntime(client: httpclient.InferenceServerClient) -> None:
    x = np.random.default_rng(1).standard_normal((8, 256)).astype(np.float32)
    inp = httpclient.InferInput("input", [8, 256], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("mlp", [inp])
    session = ort.InferenceSession(str(EXAMPLES / "mlp" / "1" / "model.onnx"))
    np.testing.assert_allclose(result.as_numpy("variable"), session.run(None, {"input": x})[0], atol=1e-5)


def test_bad_shape_through_tritonclient(client: httpclient.InferenceServerClient) -> None:
    inp = httpclient.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[1, 3\], the model expects \[-1, 4\]"):
        client.infer("iris", [inp])


def test_stats_and_config_routes(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("iris")
    assert config["runtime"] == "onnx"


def test_concurrent_mlp_requests_batch_and_each_gets_its_rows(served_examples: ServerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    session = ort.InferenceSession(str(EXAMPLES / "mlp" / "1" / "model.onnx"))
    rng = np.random.default_rng(2)
    rows = [rng.standard_normal((1 + i % 3, 256)).astype(np.float32) for i in range(48)]

    def call(x: np.ndarray) -> np.ndarray:
        # httpx rather than tritonclient: its gevent client is not meant for many OS threads.
        body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
        response = httpx.post(f"{served_examples.url}/v2/models/mlp/infer", json=body, timeout=60)
        assert response.status_code == 200, response.text
        (out,) = response.json()["outputs"]
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, rows))
    for x, got in zip(rows, results, strict=True):
        assert got.shape == (x.shape[0], 10)
        np.testing.assert_allclose(got, session.run(None, {"input": x})[0], atol=1e-5)
