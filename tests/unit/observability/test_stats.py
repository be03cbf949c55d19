"""Triton-shaped statistics: what is counted, and JSON that Triton's own schema accepts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as triton_pb

from pinnace.core.stats import ModelStats
from pinnace.observability.setup import build_observability
from pinnace.protocol.json_codec import encode_json
from pinnace.settings import ServerSettings
from tests.unit.observability.conftest import in_process, iris_body


def test_record_batch_counts_requests_rows_and_executions_as_triton_does() -> None:
    stats = ModelStats(name="m", version="1")
    stats.record_batch(3, 3, [0.001, 0.003], 0.1, 0.2, 0.3)  # 2 requests, 3 rows
    stats.record_batch(1, 1, [0.002], 0.1, 0.2, 0.3)
    s = stats.inference_stats
    assert (stats.inference_count, stats.execution_count) == (4, 2)
    assert (s.queue.count, s.queue.ns) == (3, 6_000_000)
    # Every request is charged its batch's compute time.
    assert s.compute_infer.count == 3
    assert s.compute_infer.ns == pytest.approx(600_000_000, abs=2)
    assert [(b.batch_size, b.compute_infer.count) for b in stats.batch_stats] == [(3, 1), (1, 1)]
    assert stats.batch_stats[0].compute_output.ns == 300_000_000
    assert stats.last_inference > 0


def test_serialised_stats_parse_as_tritons_model_statistics_response() -> None:
    stats = ModelStats(name="m", version="1")
    stats.record_batch(2, 2, [0.001, 0.001], 0.1, 0.2, 0.3)
    stats.inference_stats.success.add(0.5)
    stats.inference_stats.fail.add(0.25)
    doc = msgspec.json.decode(encode_json({"model_stats": [stats]}))
    assert isinstance(doc["model_stats"][0]["batch_stats"], list)
    # ParseDict refuses any field Triton's schema lacks and any value of the wrong type.
    parsed = json_format.ParseDict(doc, triton_pb.ModelStatisticsResponse())
    (model,) = parsed.model_stats
    assert (model.name, model.version, model.inference_count) == ("m", "1", 2)
    assert model.inference_stats.success.count == 1
    assert model.inference_stats.fail.ns == 250_000_000
    assert [b.batch_size for b in model.batch_stats] == [2]


def test_the_data_plane_records_success_and_failure_with_their_durations(iris_repo: Path) -> None:
    obs = build_observability(ServerSettings(repository=iris_repo, access_log=False))

    async def main() -> Any:
        async with in_process(iris_repo, obs) as server:
            for _ in range(3):
                assert (await server.client.post("/v2/models/iris/infer", json=iris_body(2))).status_code == 200
            wrong = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
            assert (await server.client.post("/v2/models/iris/infer", json=wrong)).status_code == 400
            await asyncio.sleep(0)  # batch statistics land in the loop step after the answer
            reply = await server.client.get("/v2/models/iris/stats")
            return reply.json()

    (model,) = asyncio.run(main())["model_stats"]
    s = model["inference_stats"]
    assert s["success"]["count"] == 3 and s["success"]["ns"] > 0
    assert s["fail"]["count"] == 1 and s["fail"]["ns"] > 0
    assert model["inference_count"] == 6
    assert model["execution_count"] == 3
    assert s["queue"]["count"] == 3
    # Queue and compute happen inside the request's time in the data plane.
    assert s["queue"]["ns"] + s["compute_infer"]["ns"] <= s["success"]["ns"]
