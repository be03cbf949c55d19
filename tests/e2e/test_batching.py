"""The batcher's refusals over REST, against a real server: 503 + Retry-After, and 504.

The model is held by a file gate: its ``predict`` marks that it started, then waits until the
test creates the release file. So the test knows, without any timing, that a batch is running
while it sends the next requests, and every assertion is about who got which answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.models import write_python_model
from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e

GATED = """
    import os
    import time

    ENTERED = {entered!r}
    RELEASE = {release!r}

    class Model:
        def predict(self, inputs):
            open(ENTERED, "a").close()
            give_up = time.monotonic() + 60
            while not os.path.exists(RELEASE) and time.monotonic() < give_up:
                time.sleep(0.005)
            return {{"y": inputs["x"] * 2}}
"""


class Gate:
    def __init__(self, folder: Path) -> None:
        self.entered = folder / "entered"
        self.release = folder / "release"

    def reset(self) -> None:
        self.entered.unlink(missing_ok=True)
        self.release.unlink(missing_ok=True)

    def wait_entered(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.entered.exists():
            assert time.monotonic() < deadline, "the model never started"
            time.sleep(0.005)

    def open(self) -> None:
        self.release.touch()


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Gate:
    return Gate(tmp_path_factory.mktemp("gate"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gate: Gate) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("batching") / "models"
    code = GATED.format(entered=str(gate.entered), release=str(gate.release))
    write_python_model(
        repo, "gated", code,
        inputs=[{"name": "x", "datatype": "INT64", "shape": [-1]}],
        outputs=[{"name": "y", "datatype": "INT64", "shape": [-1]}],
        batching={"max_batch_size": 4, "max_queue_size": 1, "max_queue_delay_us": 0},
        warmup=False,
    )
    with running_server(repo, grpc=False) as running:
        yield running


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as threads:
        yield threads


def infer(server: ServerProcess, value: int, **parameters: object) -> httpx.Response:
    body: dict[str, object] = {
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [value]}]
    }
    if parameters:
        body["parameters"] = parameters
    return httpx.post(f"{server.url}/v2/models/gated/infer", json=body, timeout=60)


def test_a_full_queue_answers_503_with_retry_after(
    server: ServerProcess, gate: Gate, pool: ThreadPoolExecutor
) -> None:
    gate.reset()
    running = pool.submit(infer, server, 1)
    gate.wait_entered()
    # One of these two takes the only queue place; the other is refused at once.
    second, third = pool.submit(infer, server, 2), pool.submit(infer, server, 3)
    refused = _first_done([second, third])
    try:
        assert refused.status_code == 503, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "queue full" in refused.json()["error"]
        assert not running.done(), "refused while the first batch was still running"
    finally:
        gate.open()
    queued = third if refused is second.result() else second
    assert running.result().json()["outputs"][0]["data"] == [2]
    assert queued.result().status_code == 200


def test_a_deadline_answers_504_while_the_batch_still_runs(
    server: ServerProcess, gate: Gate, pool: ThreadPoolExecutor
) -> None:
    gate.reset()
    held = pool.submit(infer, server, 5, timeout=200_000)  # 0.2 s, in microseconds (V2)
    gate.wait_entered()
    try:
        answer = held.result(timeout=30)
        assert answer.status_code == 504, answer.text
        assert "timed out" in answer.json()["error"]
        assert not gate.release.exists(), "the model was still running"
    finally:
        gate.open()
    # The late result is dropped and the model keeps serving.
    assert infer(server, 7).json()["outputs"][0]["data"] == [14]


def _first_done(futures: list[Future[httpx.Response]], timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for future in futures:
            if future.done():
                return future.result()
        time.sleep(0.005)
    raise AssertionError("neither request was answered while the model was held")
