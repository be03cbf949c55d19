"""Logs of a real ``pinnace serve``: JSON access lines, levels per module, text format, and the
opt-in payload log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def iris(rows: int) -> dict[str, object]:
    return {"id": f"v2-{rows}", "inputs": [
        {"name": "input", "datatype": "FP32", "shape": [rows, 4], "data": [5.1, 3.5, 1.4, 0.2] * rows}
    ]}


def repository(root: Path) -> Path:
    """iris (no payload log) and ``iris-audit``, the same model opted in to payload logging."""
    repo = root / "models"
    repo.mkdir()
    shutil.copytree(EXAMPLES / "iris", repo / "iris")
    shutil.copytree(EXAMPLES / "iris", repo / "iris-audit")
    manifest = repo / "iris-audit" / "model.yaml"
    doc = yaml.safe_load(manifest.read_text())
    doc.update(name="iris-audit", payload_log={"sample": 1.0})
    manifest.write_text(yaml.safe_dump(doc))
    return repo


def stopped_log(server: ServerProcess) -> list[str]:
    assert server.stop() == 0  # SIGTERM: the writers flush before the process exits
    return server.log_path.read_text().splitlines()


def test_json_logs_access_lines_module_levels_and_payloads(tmp_path: Path) -> None:
    repo, payloads = repository(tmp_path), tmp_path / "payloads"
    extra = ["--payload-log", str(payloads), "--log-level", "info,pinnace.repository=warning"]
    with running_server(repo, grpc=False, extra=extra) as server:
        url = server.url
        for rows in (1, 2):
            assert httpx.post(url + "/v2/models/iris-audit/infer", json=iris(rows)).status_code == 200
        headers = {"x-request-id": "client-id-7", "traceparent": TRACEPARENT}
        assert httpx.post(url + "/v2/models/iris/infer", json=iris(3), headers=headers).status_code == 200
        assert httpx.get(url + "/v2/models/nobody/ready").status_code in (404, 503)
        lines = stopped_log(server)

    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"ts", "level", "logger", "message"} <= set(d) for d in docs)
    access = [d for d in docs if d["logger"] == "pinnace.access"]
    infer = [d for d in access if d["route"] == "/v2/models/{model}/infer"]
    assert [(d["model"], d["version"], d["status"], d["batch_size"]) for d in infer] == [
        ("iris-audit", "1", 200, 1), ("iris-audit", "1", 200, 2), ("iris", "1", 200, 3)
    ]
    assert [d["request_id"] for d in infer] == ["v2-1", "v2-2", "client-id-7"]
    assert infer[2]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    for d in infer:
        assert d["duration_ms"] > 0 and d["queue_ms"] >= 0 and d["compute_ms"] > 0
        assert "inputs" not in json.dumps(d)  # no payloads in the access log
    (missing,) = [d for d in access if d["path"] == "/v2/models/nobody/ready"]
    assert missing["route"] == "/v2/models/{model}/ready" and missing["batch_size"] is None
    # pinnace.repository=warning hides "model ... ready" lines; other info lines remain.
    assert not [d for d in docs if d["logger"].startswith("pinnace.repository")]
    assert [d for d in docs if d["logger"] == "pinnace.server.app" and d["level"] == "info"]

    logged = [json.loads(line) for line in (payloads / "iris-audit.jsonl").read_text().splitlines()]
    assert [p["request_id"] for p in logged] == ["v2-1", "v2-2"]
    assert logged[1]["request"]["inputs"][0]["shape"] == [2, 4]
    assert [o["name"] for o in logged[1]["response"]["outputs"]] == ["label", "probabilities"]
    assert not (payloads / "iris.jsonl").exists()  # not opted in


def test_text_format_and_no_access_log(tmp_path: Path) -> None:
    repo = repository(tmp_path)
    with running_server(repo, grpc=False, extra=["--log-format", "text"]) as server:
        assert httpx.post(server.url + "/v2/models/iris/infer", json=iris(2)).status_code == 200
        lines = stopped_log(server)
    (line,) = [line for line in lines if "pinnace.access: POST" in line]
    assert " INFO    pinnace.access: POST /v2/models/iris/infer 200 " in line
    assert "model=iris version=1 batch_size=2" in line
    assert not any(line.startswith("{") for line in lines)

    with running_server(repo, grpc=False, extra=["--no-access-log"]) as server:
        assert httpx.post(server.url + "/v2/models/iris/infer", json=iris(1)).status_code == 200
        lines = stopped_log(server)
    assert not [line for line in lines if "pinnace.access" in line]
