"""Payload logging: sampling, JSON lines, size-based rotation, bounded memory, the HTTP sink."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import cycle
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from pinnace.core.stats import RequestRecord
from pinnace.observability.payloads import PayloadLogger
from pinnace.protocol.types import InferRequest, InferResponse, Tensor


def exchange(i: int = 0) -> tuple[InferRequest, InferResponse]:
    request = InferRequest(
        inputs=[Tensor("input", "FP32", np.full((1, 4), i, dtype=np.float32))], id=f"r{i}"
    )
    response = InferResponse(
        model_name="iris",
        model_version="1",
        outputs=[
            Tensor("label", "INT64", np.array([i], dtype=np.int64)),
            Tensor("name", "BYTES", np.array([b"setosa"], dtype=object)),
        ],
    )
    return request, response


def offer(log: PayloadLogger, i: int, *, sample: float = 1.0, model: str = "iris") -> None:
    request, response = exchange(i)
    log.offer(model, "1", sample, request, response, RequestRecord(model, "1", request.id))


def counts(log: PayloadLogger) -> dict[tuple[str, str], float]:
    family = next(iter(log.collect()))
    return {(s.labels["model"], s.labels["outcome"]): s.value for s in family.samples}


def test_records_are_written_as_json_lines_per_model(tmp_path: Path) -> None:
    log = PayloadLogger(str(tmp_path), interval_s=3600)
    for i in range(3):
        offer(log, i)
    offer(log, 9, model="other")
    log.close()
    lines = [json.loads(line) for line in (tmp_path / "iris.jsonl").read_text().splitlines()]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    first = lines[0]
    assert (first["model"], first["version"]) == ("iris", "1")
    assert first["request"]["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.0, 0.0, 0.0, 0.0]}
    ]
    assert first["response"]["outputs"][1] == {
        "name": "name", "datatype": "BYTES", "shape": [1], "data": ["setosa"]
    }
    assert len((tmp_path / "other.jsonl").read_text().splitlines()) == 1
    assert counts(log)[("iris", "written")] == 3


def test_only_the_sampled_share_is_logged(tmp_path: Path) -> None:
    draws = cycle([0.05, 0.5, 0.95, 0.09])  # two of every four fall under 0.1
    log = PayloadLogger(str(tmp_path), interval_s=3600, draw=lambda: next(draws))
    for i in range(8):
        offer(log, i, sample=0.1)
    log.close()
    ids = [json.loads(line)["request_id"] for line in (tmp_path / "iris.jsonl").read_text().splitlines()]
    assert ids == ["r0", "r3", "r4", "r7"]


def test_files_rotate_by_size_keeping_the_configured_backups(tmp_path: Path) -> None:
    log = PayloadLogger(str(tmp_path), max_bytes=1000, backups=2, interval_s=3600)
    for i in range(40):
        offer(log, i)
        log.flush()
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["iris.jsonl", "iris.jsonl.1", "iris.jsonl.2"]
    for path in tmp_path.iterdir():
        assert 0 < path.stat().st_size <= 1000
    newest = [json.loads(line)["request_id"] for line in (tmp_path / "iris.jsonl").read_text().splitlines()]
    assert newest[-1] == "r39"


def test_memory_is_bounded_by_records_and_bytes(tmp_path: Path) -> None:
    by_count = PayloadLogger(str(tmp_path / "a"), max_pending=2, interval_s=3600)
    for i in range(5):
        offer(by_count, i)
    assert counts(by_count)[("iris", "dropped")] == 3
    by_count.close()
    assert counts(by_count)[("iris", "written")] == 2

    # One exchange holds 16 + 8 + 6 bytes of tensor data: 100 bytes fit three.
    by_bytes = PayloadLogger(str(tmp_path / "b"), max_pending_bytes=100, interval_s=3600)
    for i in range(5):
        offer(by_bytes, i)
    assert counts(by_bytes)[("iris", "dropped")] == 2
    by_bytes.flush()  # written bytes free the budget again
    offer(by_bytes, 5)
    assert counts(by_bytes)[("iris", "dropped")] == 2
    by_bytes.close()


class _Sink(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.bodies.append((self.headers["content-type"], body))
        self.send_response(self.status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def sink() -> Iterator[tuple[str, type[_Sink]]]:
    handler = type("Handler", (_Sink,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/payloads", handler
    server.shutdown()
    server.server_close()


def test_the_http_sink_receives_newline_delimited_json(sink: tuple[str, type[_Sink]]) -> None:
    url, handler = sink
    log = PayloadLogger(url, interval_s=3600)
    for i in range(3):
        offer(log, i)
    log.close()
    ((content_type, body),) = handler.bodies
    assert content_type == "application/x-ndjson"
    assert [json.loads(line)["request_id"] for line in body.splitlines()] == ["r0", "r1", "r2"]
    assert counts(log)[("iris", "written")] == 3


def test_a_failing_sink_counts_failures_and_keeps_nothing(sink: tuple[str, type[_Sink]]) -> None:
    url, handler = sink
    handler.status = 500
    log = PayloadLogger(url, interval_s=3600)
    offer(log, 1)
    log.close()
    assert counts(log)[("iris", "failed")] == 1
    family = list(log.collect())[1]
    assert family.samples[0].value == 0  # nothing left pending


def test_processes_sharing_a_directory_write_their_own_files(tmp_path: Path) -> None:
    log = PayloadLogger(str(tmp_path), interval_s=3600, file_tag=".4242")
    offer(log, 1)
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == ["iris.4242.jsonl"]
