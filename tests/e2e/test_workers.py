"""``serve --workers 2``: several processes answer on one port, management reaches them all.

The data port is shared with SO_REUSEPORT, so each new connection lands on one worker; every
worker names itself in the ``pinnace-worker`` header of ``GET /v2``. A check "on every worker"
therefore opens fresh connections until it has met each worker, and asks its question on the
same connection that named the worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pinnace.server.workers import decode_spec, encode_spec
from tests.models import write_python_model
from tests.servers import ServerProcess

pytestmark = pytest.mark.e2e

WORKERS = 2
DOUBLE = """
    class Model:
        def predict(self, inputs):
            return {"y": inputs["x"] * 2}
"""
SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "INT64", "shape": [-1]}],
    "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
}
def start_workers(repository: Path, workers: int = WORKERS) -> ServerProcess:
    return ServerProcess(repository, extra=["--workers", str(workers)])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_python_model(repo, "double", DOUBLE, **SIGNATURE)
    return repo


@pytest.fixture
def server(repo: Path) -> Iterator[ServerProcess]:
    server = start_workers(repo)
    try:
        wait_all_ready(server)
        yield server
    finally:
        server.stop()


def wait_all_ready(server: ServerProcess, timeout: float = 60.0) -> None:
    """Ready means every worker: the port answers as soon as one of them is."""
    server.wait_ready(timeout)
    deadline = time.monotonic() + timeout
    while set(ask_every_worker(server, "/v2/health/ready").values()) != {200}:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)


def ask_every_worker(server: ServerProcess, path: str, workers: int = WORKERS) -> dict[int, int]:
    """{worker pid: status of GET path}, for every worker, each asked on its own connection."""
    seen: dict[int, int] = {}
    for _ in range(400):  # a miss is a coin flip per connection: 400 misses do not happen
        with httpx.Client(base_url=server.url, timeout=10) as client:
            pid = int(client.get("/v2").headers["pinnace-worker"])
            seen[pid] = client.get(path).status_code
        if len(seen) == workers:
            return seen
    raise AssertionError(f"met only workers {sorted(seen)}")


def manage(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.post(
        f"{server.management_url}/v2/repository/{path}",
        headers=server.management_headers(), timeout=120,
    )


def test_the_spec_survives_its_trip_over_stdin(repo: Path) -> None:
    from pinnace.server.workers import WorkerSpec
    from pinnace.settings import ServerSettings

    spec = WorkerSpec(index=1, supervisor_pid=7, settings=ServerSettings(repository=repo, workers=3))
    assert decode_spec(encode_spec(spec)) == spec


def test_requests_are_served_by_several_processes(server: ServerProcess) -> None:
    statuses = ask_every_worker(server, "/v2/models/double/ready")
    assert len(statuses) == WORKERS
    assert server.process.pid not in statuses, "the supervisor serves no data itself"
    assert set(statuses.values()) == {200}
    answer = httpx.post(
        f"{server.url}/v2/models/double/infer",
        json={"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [3, 4]}]},
    )
    assert answer.json()["outputs"][0]["data"] == [6, 8]


def test_load_and_unload_reach_every_worker(server: ServerProcess, repo: Path) -> None:
    # A model that appears after start: a load that reached one worker only would leave the
    # other one not ready for it.
    write_python_model(repo, "late", DOUBLE, **SIGNATURE)
    assert 200 not in ask_every_worker(server, "/v2/models/late/ready").values()

    assert manage(server, "models/late/load").status_code == 200
    assert set(ask_every_worker(server, "/v2/models/late/ready").values()) == {200}

    assert manage(server, "models/late/unload").status_code == 200
    assert set(ask_every_worker(server, "/v2/models/late/ready").values()) == {503}

    index = manage(server, "index")
    assert index.status_code == 200
    assert {"name": "late", "state": "UNAVAILABLE", "reason": "unloaded"} in [
        {k: row.get(k) for k in ("name", "state", "reason")} for row in index.json()
    ]


def test_grpc_load_and_unload_reach_every_worker(server: ServerProcess, repo: Path) -> None:
    write_python_model(repo, "viagrpc", DOUBLE, **SIGNATURE)
    auth = {"authorization": f"Bearer {server.token}"}
    with grpcclient.InferenceServerClient(server.grpc_management_url) as management:
        with pytest.raises(InferenceServerException, match=r"UNAUTHENTICATED|token"):
            management.load_model("viagrpc", headers={"authorization": "Bearer wrong"})
        assert management.is_server_live()
        management.load_model("viagrpc", headers=auth)
        assert set(ask_every_worker(server, "/v2/models/viagrpc/ready").values()) == {200}
        index = management.get_model_repository_index(headers=auth, as_json=True)["models"]
        assert {"name": "viagrpc", "version": "1", "state": "READY"} in index
        management.unload_model("viagrpc", headers=auth)
    assert set(ask_every_worker(server, "/v2/models/viagrpc/ready").values()) == {503}
    # The gRPC data port is shared by the workers too.
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        x = grpcclient.InferInput("x", [3], "INT64")
        x.set_data_from_numpy(np.array([1, 2, 3], dtype=np.int64))
        assert client.infer("double", [x]).as_numpy("y").tolist() == [2, 4, 6]


def test_management_checks_the_token_before_fanning_out(server: ServerProcess) -> None:
    refused = httpx.post(
        f"{server.management_url}/v2/repository/models/double/unload",
        headers={"Authorization": "Bearer wrong"},
    )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert set(ask_every_worker(server, "/v2/models/double/ready").values()) == {200}
    assert manage(server, "models/nope/load").status_code == 404


def test_a_killed_worker_is_replaced_and_keeps_the_unloads(server: ServerProcess, repo: Path) -> None:
    write_python_model(repo, "other", DOUBLE, **SIGNATURE)
    assert manage(server, "models/other/load").status_code == 200
    assert manage(server, "models/other/unload").status_code == 200
    before = ask_every_worker(server, "/v2/models/double/ready")
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            now = ask_every_worker(server, "/v2/health/live")
        except (AssertionError, httpx.TransportError):
            now = {}
        if len(now) == WORKERS and victim not in now:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"worker {victim} was not replaced:\n{server.log()}")
    # The replacement loaded the repository from disk, then copied its sibling's unload. Its
    # models answer 503 while they load too, so "other" only counts once "double" is up.
    deadline = time.monotonic() + 60
    while True:
        other = set(ask_every_worker(server, "/v2/models/other/ready").values())
        double = set(ask_every_worker(server, "/v2/models/double/ready").values())
        if (other, double) == ({503}, {200}):
            break
        assert time.monotonic() < deadline, (other, double, server.log())
        time.sleep(0.2)
    assert server.process.poll() is None


def test_sigterm_stops_every_worker_and_exits_zero(repo: Path) -> None:
    server = start_workers(repo)
    try:
        wait_all_ready(server)
        pids = list(ask_every_worker(server, "/v2/health/live"))
    finally:
        code = server.stop()
    assert code == 0, server.log_path.read_text()[-3000:]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
