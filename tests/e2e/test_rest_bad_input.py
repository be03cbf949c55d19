"""Every kind of bad input gets a 4xx that names the problem; the server stays up."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e

GOOD = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
CAP = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    import shutil

    from tests.conftest import EXAMPLES

    repo = tmp_path_factory.mktemp("bad") / "models"
    shutil.copytree(EXAMPLES, repo)
    with running_server(repo, grpc=False, extra=["--max-body-bytes", str(CAP)]) as running:
        yield running


def infer(server: ServerProcess, payload: object, model: str = "iris") -> httpx.Response:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(f"{server.url}/v2/models/{model}/infer", content=content, timeout=10)


def with_input(**changes: object) -> dict[str, object]:
    tensor = {**GOOD["inputs"][0], **changes}  # type: ignore[dict-item]
    return {"inputs": [tensor]}


def raw_request(server: ServerProcess, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"{oops", 400, "malformed JSON"),
        (b"", 400, "malformed JSON"),
        (b'{"inputs":[{"name":"\xff","shape":[1],"datatype":"FP32","data":[1]}]}', 400, "not UTF-8"),
        ({"inputs": "x"}, 400, "invalid inference request"),
        (with_input(datatype="FLOAT32"), 400, "unknown datatype 'FLOAT32'"),
        (with_input(shape=[1, 5]), 400, "5 data elements, but shape [1, 5] needs 5".replace("5 data", "4 data")),
        (with_input(shape=[-1, 4]), 400, "invalid dimension -1"),
        (with_input(shape=[1, 4], datatype="FP64"), 400, "datatype FP64, the model expects FP32"),
        (with_input(shape=[2, 2]), 400, "shape [2, 2], the model expects [-1, 4]"),
        (with_input(shape=[100000, 100000, 100000]), 413, "the limit is"),
        (with_input(data=[1.0, "abc", 1.0, 1.0]), 400, "does not fit datatype FP32"),
        (with_input(data=[1.0, "NaN", 1.0, 1.0]), 400, "contains NaN or Inf"),
        (with_input(name="petals"), 400, "unknown input 'petals'"),
        ({"inputs": []}, 400, "missing input 'input'"),
        ({"inputs": GOOD["inputs"], "outputs": [{"name": "colour"}]}, 400, "unknown output 'colour'"),
        ({"inputs": GOOD["inputs"], "parameters": {"timeout": -5}}, 400, "timeout"),
        ({"inputs": GOOD["inputs"], "parameters": {"timeout": "soon"}}, 400, "timeout"),
    ],
)
def test_bad_bodies(server: ServerProcess, payload: object, status: int, message: str) -> None:
    response = infer(server, payload)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_nan_refused_in_binary_data(server: ServerProcess) -> None:
    import numpy as np

    raw = np.array([[5.1, np.inf, 1.4, 0.2]], dtype=np.float32).tobytes()
    header = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}]}
    ).encode()
    response = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "NaN or Inf" in response.json()["error"]


def test_json_nested_too_deeply(server: ServerProcess) -> None:
    body = b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ' + b"[" * 3000 + b"]" * 3000 + b"}]}"
    response = infer(server, body)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


def test_body_over_the_cap(server: ServerProcess) -> None:
    big = json.dumps(with_input(data=[1.0] * (CAP // 4))).encode()
    response = infer(server, big)
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["error"]


def test_chunked_body_over_the_cap(server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": ['
        for _ in range(CAP // 1000 + 2):
            yield b"1.0," * 250
        yield b"1.0]}]}"

    response = httpx.post(f"{server.url}/v2/models/iris/infer", content=chunks(), timeout=10)
    assert response.status_code == 413


def test_bad_binary_header(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/iris/infer",
        content=json.dumps(GOOD).encode(),
        headers={"Inference-Header-Content-Length": "99999"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "exceeds the body" in response.json()["error"]


@pytest.mark.parametrize(
    "path",
    [
        b"/v2/models/../infer",
        b"/v2/models/%2e%2e/infer",
        b"/v2/models/%2e%2e%2firis/infer",
        b"/v2/models/iris%00/infer",
        b"/v2/models/..%2f..%2fetc%2fpasswd/infer",
        b"/v2/models/" + b"a" * 300 + b"/infer",
    ],
)
def test_path_tricks_are_unknown_models(server: ServerProcess, path: bytes) -> None:
    body = json.dumps(GOOD).encode()
    status, reply = raw_request(
        server,
        b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body,
    )
    assert status == 404, reply
    error = json.loads(reply)["error"]
    assert "/" not in error.replace("/v2", "") or "no route" in error


def test_unknown_routes_methods_and_versions(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/v3/nothing").status_code == 404
    assert httpx.get(f"{server.url}/v2/models/iris/infer").status_code == 405
    assert httpx.post(f"{server.url}/v2/health/live").status_code == 405
    response = httpx.post(f"{server.url}/v2/models/iris/versions/abc/infer", json=GOOD)
    assert response.status_code == 404
    assert "versions are positive integers" in response.json()["error"]
    response = httpx.post(f"{server.url}/v2/models/iris/versions/2/infer", json=GOOD)
    assert response.status_code == 404
    assert httpx.post(f"{server.url}/v2/repository/index").status_code == 404


def test_errors_never_leak_paths(server: ServerProcess) -> None:
    for response in (infer(server, b"{"), infer(server, GOOD, model="missing")):
        assert str(server.repository) not in response.text
        assert "Traceback" not in response.text


def test_server_still_serves_after_all_that(server: ServerProcess) -> None:
    response = infer(server, GOOD)
    assert response.status_code == 200
    assert response.json()["outputs"][0]["data"] == [0]
    assert server.process.poll() is None


def test_a_timeout_past_any_float_is_capped_to_the_maximum(server: ServerProcess) -> None:
    """An integer too large for a float is a long timeout, not a server error."""
    response = infer(server, {**GOOD, "parameters": {"timeout": 10**400}})
    assert response.status_code == 200, response.text
