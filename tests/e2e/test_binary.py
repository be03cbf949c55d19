"""The binary tensor data extension, end to end: tritonclient.http against a real server.

An identity model (custom Python, trusted and hashed) returns each input ``in_<TYPE>`` as the
output ``out_<TYPE>``, so whatever comes back is exactly what the codec decoded and encoded.
Every V2 datatype round-trips bit for bit with ``binary_data=True`` on inputs and outputs,
alone and all in one request (so that offsets into the body matter).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ml_dtypes
import msgspec
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.models import write_python_model
from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e

IDENTITY = """
    class Model:
        def predict(self, inputs):
            return {"out_" + name[len("in_"):]: value for name, value in inputs.items()}
"""


def _values() -> dict[str, np.ndarray]:
    """Two rows per datatype, with each type's extremes."""
    ints = {
        "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
        "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    }
    values: dict[str, np.ndarray] = {
        "BOOL": np.array([[True, False, True], [False, False, True]]),
        "BYTES": np.array(
            [[b"", b"caf\xc3\xa9", b"\x00\xff\x01"], [b"x" * 300, b"zero\x00byte", b"\xf0\x9f\x9a\xa4"]],
            dtype=np.object_,
        ),
        "BF16": np.array([[1.5, -2.0, 0.0], [3.140625, -np.inf, 65280.0]], dtype=ml_dtypes.bfloat16),
    }
    for name, kind in ints.items():
        info = np.iinfo(kind)
        values[name] = np.array([[info.min, info.max, 0], [1, info.max - 1, info.min + 1]], dtype=kind)
    for name, kind in {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.items():
        finfo = np.finfo(kind)
        values[name] = np.array(
            [[finfo.min, finfo.max, finfo.tiny], [-0.0, np.inf, np.nan]], dtype=kind
        )
    return values


VALUES = _values()
DATATYPES = sorted(VALUES)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("binary") / "models"
    float_types = {"FP16", "FP32", "FP64", "BF16"}
    signature = {
        "inputs": [
            {
                "name": f"in_{t}", "datatype": t, "shape": [-1, -1], "optional": True,
                **({"allow_nan": True} if t in float_types else {}),
            }
            for t in DATATYPES
        ],
        "outputs": [{"name": f"out_{t}", "datatype": t, "shape": [-1, -1]} for t in DATATYPES],
    }
    write_python_model(repo, "identity", IDENTITY, **signature, warmup=False)
    with running_server(repo, grpc=False) as running:
        yield running


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    yield client
    client.close()


def _input(datatype: str, *, binary: bool = True) -> httpclient.InferInput:
    value = VALUES[datatype]
    tensor = httpclient.InferInput(f"in_{datatype}", list(value.shape), datatype)
    tensor.set_data_from_numpy(value, binary_data=binary)
    return tensor


def _assert_same(got: np.ndarray | None, datatype: str) -> None:
    want = VALUES[datatype]
    assert got is not None, datatype
    assert got.dtype == want.dtype, datatype
    assert got.shape == want.shape, datatype
    if datatype == "BYTES":
        assert got.tolist() == want.tolist()
    else:
        # Bit patterns, not values: -0.0 stays negative and NaN stays NaN.
        assert got.tobytes() == want.tobytes(), datatype


@pytest.mark.parametrize("datatype", DATATYPES)
def test_each_datatype_round_trips_as_binary(
    client: httpclient.InferenceServerClient, datatype: str
) -> None:
    result = client.infer(
        "identity",
        [_input(datatype)],
        outputs=[httpclient.InferRequestedOutput(f"out_{datatype}", binary_data=True)],
    )
    output = result.get_output(f"out_{datatype}")
    assert output is not None
    assert output["parameters"]["binary_data_size"] > 0
    assert "data" not in output
    _assert_same(result.as_numpy(f"out_{datatype}"), datatype)


def test_every_datatype_in_one_request(client: httpclient.InferenceServerClient) -> None:
    result = client.infer(
        "identity",
        [_input(t) for t in DATATYPES],
        outputs=[httpclient.InferRequestedOutput(f"out_{t}", binary_data=True) for t in DATATYPES],
    )
    for datatype in DATATYPES:
        _assert_same(result.as_numpy(f"out_{datatype}"), datatype)


# JSON carries neither inf/nan (the float values here), BF16, nor non-UTF-8 bytes.
JSON_SAFE = [t for t in DATATYPES if t not in ("BF16", "FP16", "FP32", "FP64", "BYTES")]


@pytest.mark.parametrize("datatype", JSON_SAFE)
def test_json_input_binary_output_and_back(
    client: httpclient.InferenceServerClient, datatype: str
) -> None:
    """Mixing JSON and binary tensors in one request and one response."""
    result = client.infer(
        "identity",
        [_input(datatype, binary=False), _input("FP64")],
        outputs=[
            httpclient.InferRequestedOutput(f"out_{datatype}", binary_data=True),
            httpclient.InferRequestedOutput("out_FP64", binary_data=False),
        ],
    )
    _assert_same(result.as_numpy(f"out_{datatype}"), datatype)
    assert "data" in (result.get_output("out_FP64") or {})


def _long_finite(datatype: str) -> np.ndarray:
    """Two rows of 300: JSON long enough for the simdjson and orjson paths, extremes included."""
    rng = np.random.default_rng(3)
    want = VALUES[datatype]
    if datatype == "BOOL":
        return rng.integers(0, 2, (2, 300)).astype(bool)
    if want.dtype.kind == "f":
        info = np.finfo(want.dtype)
        values = rng.uniform(-1e4, 1e4, (2, 300)).astype(want.dtype)
        values[0, :4] = [info.min, info.max, info.tiny, -0.0]
        return values
    limits = np.iinfo(want.dtype)
    values = rng.integers(limits.min, limits.max, (2, 300), dtype=want.dtype, endpoint=True)
    values[0, :2] = [limits.min, limits.max]
    return values


@pytest.mark.parametrize("datatype", [t for t in DATATYPES if t not in ("BF16", "BYTES")])
def test_long_json_arrays_round_trip_exactly(
    client: httpclient.InferenceServerClient, datatype: str
) -> None:
    """JSON both ways, long enough for the parsers that skip Python numbers."""
    value = _long_finite(datatype)
    tensor = httpclient.InferInput(f"in_{datatype}", list(value.shape), datatype)
    tensor.set_data_from_numpy(value, binary_data=False)
    result = client.infer(
        "identity", [tensor],
        outputs=[httpclient.InferRequestedOutput(f"out_{datatype}", binary_data=False)],
    )
    got = result.as_numpy(f"out_{datatype}")
    assert got is not None and "data" in (result.get_output(f"out_{datatype}") or {})
    assert got.dtype == value.dtype and got.shape == value.shape
    assert got.tobytes() == value.tobytes()


def test_binary_data_output_parameter_makes_every_output_binary(server: ServerProcess) -> None:
    """Raw HTTP, to pin the wire format: JSON header, then the tensors in output order."""
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    b = np.array([[0.5, -1.0]], dtype=np.float64)
    header = msgspec.json.encode({
        "inputs": [
            {"name": "in_INT32", "shape": [2, 3], "datatype": "INT32",
             "parameters": {"binary_data_size": a.nbytes}},
            {"name": "in_FP64", "shape": [1, 2], "datatype": "FP64",
             "parameters": {"binary_data_size": b.nbytes}},
        ],
        "outputs": [{"name": "out_INT32"}, {"name": "out_FP64"}],
        "parameters": {"binary_data_output": True},
    })
    response = httpx.post(
        f"{server.url}/v2/models/identity/infer",
        content=header + a.tobytes() + b.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    doc = msgspec.json.decode(response.content[:json_length])
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [a.nbytes, b.nbytes]
    assert response.content[json_length:] == a.tobytes() + b.tobytes()


@pytest.mark.parametrize(
    ("header_length", "extra", "message"),
    [
        (10_000, b"", "exceeds the body"),
        (None, b"\x00" * 4, "belong to no input"),
    ],
)
def test_inconsistent_binary_bodies_are_refused(
    server: ServerProcess, header_length: int | None, extra: bytes, message: str
) -> None:
    a = np.arange(3, dtype=np.int32).reshape(1, 3)
    header = msgspec.json.encode({
        "inputs": [{"name": "in_INT32", "shape": [1, 3], "datatype": "INT32",
                    "parameters": {"binary_data_size": a.nbytes}}],
    })
    length = header_length if header_length is not None else len(header)
    response = httpx.post(
        f"{server.url}/v2/models/identity/infer",
        content=header + a.tobytes() + extra,
        headers={"Inference-Header-Content-Length": str(length)},
    )
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_identity_model_is_hashed_and_trusted(server: ServerProcess) -> None:
    manifest = (server.repository / "identity" / "model.yaml").read_text()
    assert "trusted: true" in manifest
    assert "1/model.py:" in manifest
    assert Path(server.repository / "identity" / "1" / "model.py").is_file()
