"""The management listener: token guard, index, load/unload/reload under traffic."""

from __future__ import annotations

import re
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.models import write_python_model
from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e

IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [6.7, 3.0, 5.2, 2.3]}]}
SLOW = """
    import time

    class Model:
        def predict(self, inputs):
            time.sleep(0.3)
            return {"y": inputs["x"] * 2}
"""
SLOW_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1]}],
    "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
}


def manage(server: ServerProcess, path: str, token: str | None = "default") -> httpx.Response:
    headers = server.management_headers() if token == "default" else (
        {"Authorization": f"Bearer {token}"} if token else {}
    )
    return httpx.post(f"{server.management_url}/v2/repository/{path}", headers=headers, timeout=60)


def wait_in_flight(server: ServerProcess, model: str, count: int, timeout: float = 30.0) -> None:
    """Until ``count`` requests for ``model`` are queued or executing (from /metrics)."""
    pattern = re.compile(rf'^pinnace_inflight_requests{{model="{model}",version="1"}} (\S+)$', re.M)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(httpx.get(f"{server.url}/metrics").text)
        if found and float(found.group(1)) >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} requests for {model!r} never got in flight")


def test_token_is_required(fresh_repo: Path) -> None:
    with running_server(fresh_repo, grpc=False) as server:
        missing = manage(server, "index", token=None)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert manage(server, "index", token="wrong").status_code == 401
        assert manage(server, "models/iris/unload", token="wrong").status_code == 401
        assert httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 200  # untouched
        rows = manage(server, "index").json()
        assert {(r["name"], r["state"]) for r in rows} == {
            ("iris", "READY"), ("iris-sklearn", "READY"), ("mlp", "READY")
        }


def test_a_load_body_that_is_not_json_gets_400_and_changes_nothing(fresh_repo: Path) -> None:
    with running_server(fresh_repo, grpc=False) as server:
        for body in (b"{oops", b'{"parameters": {"x": "\xff"}}'):  # the second: not UTF-8
            answer = httpx.post(
                f"{server.management_url}/v2/repository/models/iris/load",
                headers=server.management_headers(), content=body, timeout=60,
            )
            assert answer.status_code == 400, answer.text
            assert answer.json() == {"error": "malformed JSON body"}
        assert httpx.get(f"{server.url}/v2/models/iris/ready").status_code == 200


def test_reload_and_unload_under_traffic_lose_nothing(fresh_repo: Path) -> None:
    write_python_model(fresh_repo, "slow", SLOW, **SLOW_SIGNATURE)
    with running_server(fresh_repo, grpc=False) as server:
        stop = threading.Event()
        failures: list[str] = []
        counts = {"ok": 0}

        def traffic() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    r = client.post("/v2/models/iris/infer", json=IRIS)
                    if r.status_code != 200 or r.json()["outputs"][0]["data"] != [2]:
                        failures.append(f"{r.status_code} {r.text[:200]}")
                    counts["ok"] += 1

        def slow_request() -> int:
            r = httpx.post(
                f"{server.url}/v2/models/slow/infer",
                json={"inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [21]}]},
                timeout=30,
            )
            return r.status_code if r.status_code != 200 else r.json()["outputs"][0]["data"][0]

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for _ in range(5):
                assert manage(server, "models/iris/load").status_code == 200
            # In-flight requests on a model being unloaded finish before it goes.
            with ThreadPoolExecutor(8) as pool:
                slow = [pool.submit(slow_request) for _ in range(8)]
                wait_in_flight(server, "slow", 8)
                assert manage(server, "models/slow/unload").status_code == 200
                assert [f.result() for f in slow] == [42] * 8
            gone = httpx.post(f"{server.url}/v2/models/slow/infer", json={"inputs": []})
            assert gone.status_code == 503
            assert "unloaded" in gone.json()["error"]
            assert manage(server, "models/slow/load").status_code == 200
            assert slow_request() == 42
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert failures == []
        assert counts["ok"] > 0


def test_model_that_fails_to_load_while_others_serve(fresh_repo: Path) -> None:
    shutil.copytree(fresh_repo / "iris", fresh_repo / "corrupt")
    manifest = fresh_repo / "corrupt" / "model.yaml"
    manifest.write_text(manifest.read_text().replace("name: iris", "name: corrupt"))
    (fresh_repo / "corrupt" / "1" / "model.onnx").write_bytes(b"\x00" * 64)
    with running_server(fresh_repo, grpc=False, extra=["--no-strict-readiness"]) as server:
        index = {r["name"]: r for r in manage(server, "index").json()}
        assert index["corrupt"]["state"] == "UNAVAILABLE"
        assert "sha256" in index["corrupt"]["reason"]
        assert httpx.get(f"{server.url}/v2/models/corrupt/ready").status_code == 503
        response = httpx.post(f"{server.url}/v2/models/corrupt/infer", json=IRIS)
        assert response.status_code == 503
        assert "sha256" in response.json()["error"]
        assert httpx.post(f"{server.url}/v2/models/iris/infer", json=IRIS).status_code == 200
        retry = manage(server, "models/corrupt/load")
        assert retry.status_code == 400
        assert "sha256" in retry.json()["error"]
        # Fix the artifact and load again through the API.
        shutil.copy(fresh_repo / "iris" / "1" / "model.onnx", fresh_repo / "corrupt" / "1" / "model.onnx")
        assert manage(server, "models/corrupt/load").status_code == 200
        assert httpx.post(f"{server.url}/v2/models/corrupt/infer", json=IRIS).status_code == 200


def test_strict_readiness_waits_for_every_model(fresh_repo: Path) -> None:
    (fresh_repo / "iris" / "1" / "model.onnx").write_bytes(b"broken")
    server = ServerProcess(fresh_repo, grpc=False)
    try:
        server.wait_live()
        assert httpx.get(f"{server.url}/v2/models/mlp/ready").status_code in (200, 503)
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
    finally:
        assert server.stop() == 0


def test_load_a_new_model_and_unsupported_parameters(fresh_repo: Path) -> None:
    with running_server(fresh_repo, grpc=False) as server:
        shutil.copytree(fresh_repo / "iris", fresh_repo / "iris2")
        manifest = fresh_repo / "iris2" / "model.yaml"
        manifest.write_text(manifest.read_text().replace("name: iris", "name: iris2"))
        assert manage(server, "models/nothing/load").status_code == 404
        response = httpx.post(
            f"{server.management_url}/v2/repository/models/iris2/load",
            headers=server.management_headers(),
            json={"parameters": {"config": "{}"}},
        )
        assert response.status_code == 400
        assert "not supported" in response.json()["error"]
        assert manage(server, "models/iris2/load").status_code == 200
        assert httpx.post(f"{server.url}/v2/models/iris2/infer", json=IRIS).status_code == 200
