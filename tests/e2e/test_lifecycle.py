"""Start and stop of a real ``pinnace serve``: warmup gates readiness; SIGTERM drains and exits 0.

The models are custom Python models that wait for a file to appear (a gate the test opens), so
every step is decided by the test, never by a sleep.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_metrics import scrape, value
from tests.models import write_python_model
from tests.servers import ServerProcess

pytestmark = pytest.mark.e2e

WAIT_S = 60.0

GATED = """
    import pathlib, time
    import numpy as np

    GATE = pathlib.Path({gate!r})

    class Model:
        def predict(self, inputs):
            deadline = time.monotonic() + 60
            while not GATE.exists():  # held until the test opens the gate
                if time.monotonic() > deadline:
                    raise RuntimeError("the test never opened the gate")
                time.sleep(0.01)
            return {{"y": inputs["x"] * 2}}
"""

SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
}


def gated_model(repo: Path, name: str, gate: Path, **manifest: Any) -> None:
    write_python_model(repo, name, GATED.format(gate=str(gate)), **SIGNATURE, **manifest)


def eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.TransportError:
        return 0  # listener closed


def test_warmup_gates_readiness_while_liveness_holds(tmp_path: Path) -> None:
    repo, gate = tmp_path / "models", tmp_path / "warmup-gate"
    gated_model(repo, "slowstart", gate, warmup=True)  # warmup runs predict: held at the gate
    server = ServerProcess(repo, grpc=False)
    try:
        server.wait_live()
        for _ in range(5):  # warmup cannot finish: the gate is closed
            assert status(server.url + "/v2/health/live") == 200
            assert status(server.url + "/v2/health/ready") == 503
            assert status(server.url + "/v2/models/slowstart/ready") == 503
        samples = scrape(server.url)
        assert value(samples, "pinnace_model_state", model="slowstart", state="LOADING") == 1
        assert value(samples, "pinnace_server_ready") == 0
        reply = httpx.post(server.url + "/v2/models/slowstart/infer", json=_body(1.0))
        assert reply.status_code == 503

        gate.touch()
        server.wait_ready(WAIT_S)
        assert status(server.url + "/v2/models/slowstart/ready") == 200
        reply = httpx.post(server.url + "/v2/models/slowstart/infer", json=_body(1.0))
        assert reply.json()["outputs"][0]["data"] == [2.0]
    finally:
        assert server.stop() == 0


def test_sigterm_fails_readiness_then_finishes_50_in_flight_requests_and_exits_0(
    tmp_path: Path,
) -> None:
    repo, gate = tmp_path / "models", tmp_path / "drain-gate"
    gated_model(
        repo, "slow", gate, warmup=False,
        batching={"max_batch_size": 64, "max_queue_delay_us": 0},
    )
    server = ServerProcess(repo, grpc=False, extra=["--shutdown-delay", "2", "--graceful-timeout", "60"])
    try:
        server.wait_ready()
        with ThreadPoolExecutor(50) as pool:
            replies = [
                pool.submit(httpx.post, server.url + "/v2/models/slow/infer", json=_body(i), timeout=WAIT_S)
                for i in range(50)
            ]
            eventually(
                lambda: value(scrape(server.url), "pinnace_inflight_requests", model="slow", version="1") == 50,
                "50 requests in flight",
            )
            server.process.send_signal(signal.SIGTERM)
            # Readiness fails at once; the listener still answers during the shutdown delay.
            eventually(lambda: status(server.url + "/v2/health/ready") == 503, "readiness failing")
            assert server.process.poll() is None
            gate.touch()
            results = [r.result() for r in replies]
        assert [r.status_code for r in results] == [200] * 50
        assert sorted(r.json()["outputs"][0]["data"][0] for r in results) == [2.0 * i for i in range(50)]
        assert server.process.wait(WAIT_S) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit:\n{server.log()}")
    finally:
        server.stop()
    log = server.log_path.read_text()
    assert "draining in-flight requests" in log


def _body(x: float) -> dict[str, object]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]}
