"""The access log: fields, request ids, trace ids, formats, levels, and bounded queueing."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from pinnace.core.stats import RequestRecord
from pinnace.observability.access import ACCESS_LOGGER, AccessLog
from pinnace.observability.deferred import DELAY_S

FIELDS = [
    "ts", "level", "logger", "message", "request_id", "protocol", "method", "path", "route",
    "model", "version", "status", "outcome", "duration_ms", "queue_ms", "compute_ms",
    "batch_size", "client", "trace_id",
]


def scope(path: str = "/v2/models/iris/infer", **headers: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.0.0.7", 4242),
    }


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger(ACCESS_LOGGER)
    saved = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(saved)


def written(access: AccessLog, stream: io.StringIO) -> list[str]:
    access.flush()
    return stream.getvalue().splitlines()


def test_an_inference_line_carries_ids_split_latency_and_batch(access_logger: logging.Logger) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    record = RequestRecord("iris", "1", None, batch_size=8, queue_s=0.0002, compute_s=0.0031)
    access.add("rest", "/v2/models/{model}/infer", "iris", "", 200, 0.0045,
               scope(x_request_id="req-42"), record)
    (line,) = written(access, stream)
    doc = json.loads(line)
    assert list(doc) == FIELDS
    assert doc["request_id"] == "req-42"
    assert (doc["model"], doc["version"], doc["status"], doc["outcome"]) == ("iris", "1", 200, "success")
    assert (doc["duration_ms"], doc["queue_ms"], doc["compute_ms"], doc["batch_size"]) == (4.5, 0.2, 3.1, 8)
    assert (doc["method"], doc["path"], doc["client"]) == ("POST", "/v2/models/iris/infer", "10.0.0.7:4242")
    assert doc["message"] == "POST /v2/models/iris/infer 200"
    access.close()


def test_request_ids_come_from_the_header_then_the_v2_id_then_are_made(
    access_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    route = "/v2/models/{model}/infer"
    access.add("rest", route, "iris", "", 200, 0.001, scope(), RequestRecord("iris", "1", "body-id"))
    access.add("rest", route, "iris", "", 200, 0.001, scope(), None)
    access.add("rest", route, "iris", "", 200, 0.001, scope(), None)
    ids = [json.loads(line)["request_id"] for line in written(access, stream)]
    assert ids[0] == "body-id"
    assert ids[1] != ids[2] and ids[1] and ids[2]
    access.close()


def test_trace_id_is_read_from_an_incoming_traceparent(access_logger: logging.Logger) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    access.add("rest", "/v2", "", "", 200, 0.001, scope("/v2", traceparent=good), None)
    access.add("rest", "/v2", "", "", 200, 0.001, scope("/v2", traceparent="garbage"), None)
    docs = [json.loads(line) for line in written(access, stream)]
    assert docs[0]["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert docs[1]["trace_id"] is None
    assert docs[0]["model"] is None and docs[0]["queue_ms"] is None
    access.close()


def test_grpc_lines_have_no_http_fields(access_logger: logging.Logger) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    access.add("grpc", "ModelInfer", "iris", "1", 0, 0.001, None, RequestRecord("iris", "1", None))
    doc = json.loads(written(access, stream)[0])
    assert (doc["protocol"], doc["route"], doc["outcome"], doc["method"]) == ("grpc", "ModelInfer", "success", None)
    assert doc["message"] == "ModelInfer 0"
    access.close()


def test_text_lines_stay_one_line_whatever_the_path(access_logger: logging.Logger) -> None:
    stream = io.StringIO()
    access = AccessLog("text", stream=stream, interval_s=3600)
    record = RequestRecord("iris", "1", None, batch_size=2, queue_s=0.001, compute_s=0.002)
    access.add("rest", "unknown", "", "", 404, 0.001, scope("/evil\nFAKE LINE"), None)
    access.add("rest", "/v2/models/{model}/infer", "iris", "", 200, 0.001, scope(), record)
    lines = written(access, stream)
    assert len(lines) == 2
    assert "/evil\\x0aFAKE LINE 404" in lines[0]
    assert " INFO    pinnace.access: POST /v2/models/iris/infer 200 1.0ms id=" in lines[1]
    assert "model=iris version=1 batch_size=2 queue_ms=1.0 compute_ms=2.0" in lines[1]
    access.close()


def test_the_logger_level_turns_the_access_log_off(access_logger: logging.Logger) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    access_logger.setLevel(logging.WARNING)
    access.add("rest", "/v2", "", "", 200, 0.001, scope("/v2"), None)
    assert written(access, stream) == []
    access.close()


def test_a_full_queue_drops_and_counts_instead_of_growing(access_logger: logging.Logger) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, max_pending=3, interval_s=3600)
    for _ in range(5):
        access.add("rest", "/v2", "", "", 200, 0.001, scope("/v2"), None)
    assert access.dropped == 2
    (metric,) = access.collect()
    assert metric.samples[0].value == 2
    assert len(written(access, stream)) == 3
    access.close()


def test_a_line_that_cannot_be_built_is_skipped_without_failing_the_request(
    access_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    broken = {**scope(), "client": 5}  # not a (host, port) pair
    for _ in range(2):
        access.add("rest", "/v2", "", "", 200, 0.001, broken, None)  # must not raise
    access.add("rest", "/v2", "", "", 200, 0.001, scope("/v2"), None)
    assert [json.loads(line)["path"] for line in written(access, stream)] == ["/v2"]
    assert [r.getMessage() for r in caplog.records if r.name == "pinnace.observability.access"] == [
        "an access log line could not be built; such lines are skipped"
    ]
    access.close()


def test_json_lines_are_byte_for_byte_what_msgspec_writes_for_the_whole_line(
    access_logger: logging.Logger,
) -> None:
    """Lines are put together from pieces encoded apart (what repeats, once): every piece
    must still be valid, escaped JSON in the documented order."""
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)
    odd_path = '/v2/models/"q"\\\n\u00e9\u2028/infer'
    record = RequestRecord('mo"del\n', "v\u00e9", None, batch_size=3, queue_s=0.0004444, compute_s=0.0015555)
    access.add("rest", "/v2/models/{model}/infer", "x", "", 503, 0.0123456,
               scope(odd_path, x_request_id='id "x" \\ y'), record)
    access.add("grpc", "ModelInfer", "m", "", 14, 0.5, None, None)
    access.flush()
    lines = stream.getvalue().rstrip("\n").split("\n")  # not splitlines(): U+2028 is no line end
    docs = [json.loads(line) for line in lines]
    for line, doc in zip(lines, docs, strict=True):
        assert list(doc) == FIELDS
        assert line.encode() == msgspec.json.encode(doc)
    assert (docs[0]["path"], docs[0]["request_id"], docs[0]["model"]) == (odd_path, 'id "x" \\ y', 'mo"del\n')
    assert (docs[0]["duration_ms"], docs[0]["queue_ms"], docs[0]["compute_ms"]) == (12.346, 0.444, 1.556)
    assert (docs[1]["method"], docs[1]["client"], docs[1]["outcome"], docs[1]["duration_ms"]) == (
        None, None, "unavailable", 500.0
    )
    access.close()


def test_the_loop_builds_a_moments_lines_together_after_the_responses(
    access_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)

    async def answer_three() -> list[int]:
        for _ in range(3):
            access.add("rest", "/v2", "", "", 200, 0.001, scope("/v2"), None)
        built = [access._writer.pending]
        await asyncio.sleep(0)  # the loop step ends: still nothing built
        built.append(access._writer.pending)
        await asyncio.sleep(DELAY_S * 5)
        built.append(access._writer.pending)
        return built

    assert asyncio.run(answer_three()) == [0, 0, 3]
    assert len(written(access, stream)) == 3
    access.close()


def test_lines_whose_loop_closed_before_building_them_are_built_by_the_next_add(
    access_logger: logging.Logger,
) -> None:
    stream = io.StringIO()
    access = AccessLog("json", stream=stream, interval_s=3600)

    async def answered_last() -> None:  # a response in the loop's last step
        asyncio.get_running_loop().call_soon(access.add, "rest", "/v2/a", "", "", 200, 0.001, None, None)

    loop = asyncio.new_event_loop()
    loop.run_until_complete(answered_last())
    loop.close()  # the build it asked for never runs
    access.add("rest", "/v2/b", "", "", 200, 0.001, None, None)  # no loop now: built at once
    access._writer.flush()
    assert [json.loads(line)["route"] for line in stream.getvalue().splitlines()] == ["/v2/a", "/v2/b"]
    access.close()
