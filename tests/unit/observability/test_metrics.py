"""The server's metrics in-process: families, exposition, label guards, scrape-time state."""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from pinnace.core.dataplane import DataPlane, scheduler_factory
from pinnace.observability.metrics import (
    UNKNOWN,
    CounterFamily,
    HistogramFamily,
    ServerMetrics,
    outcome_of,
)
from pinnace.observability.setup import build_observability
from pinnace.repository import ModelRepository
from pinnace.settings import ServerSettings
from tests.unit.observability.conftest import in_process, iris_body

Series = tuple[str, frozenset[tuple[str, str]]]


def samples(text: str) -> dict[Series, float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


class _Families(Collector):
    def __init__(self, *families: CounterFamily | HistogramFamily) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter([f.collect() for f in self.families])


def test_histogram_exposes_cumulative_buckets_sum_and_count() -> None:
    hist = HistogramFamily("t_seconds", "test", ["m"], [0.001, 0.01, 0.1])
    for seconds in (0.0005, 0.001, 0.002, 0.05, 3.0):
        hist.labels("a").observe(seconds)
    registry = CollectorRegistry()
    registry.register(_Families(hist))
    text = generate_latest(registry).decode()
    assert value(text, "t_seconds_bucket", m="a", le="0.001") == 2  # "le": 0.001 counts
    assert value(text, "t_seconds_bucket", m="a", le="0.01") == 3
    assert value(text, "t_seconds_bucket", m="a", le="0.1") == 4
    assert value(text, "t_seconds_bucket", m="a", le="+Inf") == 5
    assert value(text, "t_seconds_count", m="a") == 5
    assert value(text, "t_seconds_sum", m="a") == pytest.approx(3.0535)


def test_counter_is_exposed_with_total_suffix() -> None:
    counter = CounterFamily("t_requests", "test", ["outcome"])
    counter.labels("ok").inc()
    counter.labels("ok").inc(2)
    registry = CollectorRegistry()
    registry.register(_Families(counter))
    assert value(generate_latest(registry).decode(), "t_requests_total", outcome="ok") == 3


@pytest.mark.parametrize(
    ("protocol", "status", "outcome"),
    [
        ("rest", 200, "success"), ("rest", 400, "invalid"), ("rest", 404, "not_found"),
        ("rest", 503, "unavailable"), ("rest", 504, "timeout"), ("rest", 499, "cancelled"),
        ("rest", 418, "invalid"), ("rest", 599, "error"), ("grpc", 0, "success"),
        ("grpc", 3, "invalid"), ("grpc", 5, "not_found"), ("grpc", 4, "timeout"),
        ("grpc", 14, "unavailable"), ("grpc", 200, "success"), ("grpc", 404, "not_found"),
    ],
)
def test_outcomes_are_a_small_fixed_set(protocol: str, status: int, outcome: str) -> None:
    assert outcome_of(protocol, status) == outcome


def test_traffic_is_counted_by_model_version_route_and_outcome(iris_repo: Path) -> None:
    obs = build_observability(ServerSettings(repository=iris_repo, access_log=False))

    async def main() -> str:
        async with in_process(iris_repo, obs) as server:
            for rows in (1, 2, 3):
                assert (await server.client.post("/v2/models/iris/infer", json=iris_body(rows))).status_code == 200
            bad = await server.client.post("/v2/models/iris/versions/1/infer", json={"inputs": []})
            assert bad.status_code == 400
            assert (await server.client.get("/v2/models/iris/versions/7")).status_code == 404
            await asyncio.sleep(0)  # batch statistics land in the loop step after the answer
            scrape = await server.client.get("/metrics")
            assert scrape.headers["content-type"].startswith("text/plain")
            return scrape.text

    text = asyncio.run(main())
    route = "/v2/models/{model}/infer"
    assert value(text, "pinnace_requests_total", protocol="rest", route=route, model="iris",
                 version="1", outcome="success") == 3
    assert value(text, "pinnace_requests_total", protocol="rest", route="/v2/models/{model}/versions/{version}/infer",
                 model="iris", version="1", outcome="invalid") == 1
    assert value(text, "pinnace_requests_total", protocol="rest", route="/v2/models/{model}/versions/{version}",
                 model="iris", version=UNKNOWN, outcome="not_found") == 1
    assert value(text, "pinnace_request_duration_seconds_count", protocol="rest", model="iris", version="1") == 4
    assert value(text, "pinnace_batch_size_sum", model="iris", version="1") == 6  # rows
    assert value(text, "pinnace_batch_size_count", model="iris", version="1") == 3  # executions
    assert value(text, "pinnace_queue_duration_seconds_count", model="iris", version="1") == 3
    assert value(text, "pinnace_compute_duration_seconds_count", model="iris", version="1") == 3
    assert value(text, "pinnace_model_loads_total", model="iris", version="1", outcome="success") == 1
    assert value(text, "pinnace_model_state", model="iris", state="READY") == 1
    assert value(text, "pinnace_model_state", model="iris", state="LOADING") == 0
    assert value(text, "pinnace_queue_depth", model="iris", version="1") == 0
    assert value(text, "pinnace_inflight_requests", model="iris", version="1") == 0
    assert value(text, "pinnace_model_load_duration_seconds", model="iris", version="1") > 0
    onnx = iris_repo / "iris" / "1" / "model.onnx"
    assert value(text, "pinnace_model_artifact_bytes", model="iris", version="1") == onnx.stat().st_size
    assert value(text, "process_resident_memory_bytes") > 0


def test_random_model_names_add_no_series(iris_repo: Path) -> None:
    obs = build_observability(ServerSettings(repository=iris_repo, access_log=False))
    rng = random.Random(7)

    def name() -> str:
        return "".join(rng.choices(string.ascii_letters, k=12))

    async def main() -> tuple[set[Series], set[Series]]:
        async with in_process(iris_repo, obs) as server:
            async def burst(n: int) -> None:
                for _ in range(n):
                    m = name()
                    await server.client.post(f"/v2/models/{m}/infer", json=iris_body())
                    await server.client.get(f"/v2/models/{m}/versions/{rng.randint(1, 99)}/ready")
                    await server.client.post(f"/v2/models/iris/versions/{rng.randint(2, 10**6)}/infer", json=iris_body())
                    await server.client.get(f"/{name()}/{name()}")

            await burst(5)  # the first unknown request of each kind makes its __unknown__ series
            await server.client.get("/metrics")  # and so does the first scrape
            before = set(samples((await server.client.get("/metrics")).text))
            await burst(250)
            after = set(samples((await server.client.get("/metrics")).text))
            return before, after

    before, after = asyncio.run(main())
    assert after == before


def test_model_labels_accept_only_what_the_repository_knows(iris_repo: Path) -> None:
    repository = ModelRepository(iris_repo, scheduler_factory())
    repository.discover()  # knows the folder "iris"; nothing is loaded
    metrics = ServerMetrics(CollectorRegistry(), process_metrics=False)
    metrics.bind(DataPlane(repository))
    assert metrics.model_labels("nope", "1") == (UNKNOWN, "")
    assert metrics.model_labels("iris", "") == ("iris", "")
    assert metrics.model_labels("iris", "3") == ("iris", UNKNOWN)  # no such version loaded
    metrics.on_load("iris", "3", 0.1, False)  # a failed load still makes the version known
    assert metrics.model_labels("iris", "3") == ("iris", "3")


def test_a_scrape_counts_the_requests_answered_just_before_it() -> None:
    """Requests are counted a moment after their answers (off the next request's path); a
    scrape counts what waits first."""
    metrics = ServerMetrics(CollectorRegistry(), process_metrics=False)

    async def answer_then_scrape() -> str:
        metrics.on_request("rest", "/v2/models/{model}/infer", "iris", "1", 200, 0.002, True)
        metrics.on_request("rest", "/v2/models/{model}/infer", "iris", "1", 400, 0.001, False)
        return metrics.exposition()[1].decode()

    found = samples(asyncio.run(answer_then_scrape()))
    labels = {"protocol": "rest", "route": "/v2/models/{model}/infer", "model": "iris", "version": "1"}
    assert found["pinnace_requests_total", frozenset({**labels, "outcome": "success"}.items())] == 1
    assert found["pinnace_requests_total", frozenset({**labels, "outcome": "invalid"}.items())] == 1
    timed = frozenset({"protocol": "rest", "model": "iris", "version": "1"}.items())
    assert found["pinnace_request_duration_seconds_count", timed] == 1
