"""``/metrics`` of a real ``pinnace serve`` under traffic: counts, histograms, label hygiene."""

from __future__ import annotations

import random
import shutil
import string
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import EXAMPLES
from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e

Series = tuple[str, frozenset[tuple[str, str]]]


def scrape(url: str) -> dict[Series, float]:
    """Every sample of ``url/metrics``, keyed by name and labels."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[Series, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def iris(rows: int, width: int = 4) -> dict[str, object]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [rows, width],
                        "data": [0.5] * rows * width}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """iris, plus ``broken`` (an artifact that fails its hash check) to count a load failure."""
    repo = tmp_path_factory.mktemp("metrics") / "models"
    repo.mkdir()
    shutil.copytree(EXAMPLES / "iris", repo / "iris")
    shutil.copytree(EXAMPLES / "iris", repo / "broken")
    manifest = repo / "broken" / "model.yaml"
    manifest.write_text(manifest.read_text().replace("name: iris", "name: broken"))
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not the model that was hashed")
    with running_server(repo, extra=["--no-strict-readiness"]) as process:
        yield process


INFER = "/v2/models/{model}/infer"


def test_counts_and_histograms_match_the_traffic_sent(server: ServerProcess) -> None:
    before = scrape(server.url)
    rows_per_request = [1, 2, 3, 4] * 10  # 40 requests, 100 rows, from 4 clients at once
    scrapes: list[dict[Series, float]] = []
    done = threading.Event()

    def client(share: list[int]) -> list[int]:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return [http.post("/v2/models/iris/infer", json=iris(rows)).status_code for rows in share]

    def scraper() -> None:  # scrapes while the traffic runs
        while not done.is_set():
            scrapes.append(scrape(server.url))

    watcher = threading.Thread(target=scraper)
    started = time.monotonic()
    watcher.start()
    with ThreadPoolExecutor(4) as pool:
        statuses = [s for part in pool.map(client, [rows_per_request[i::4] for i in range(4)]) for s in part]
    bad = [httpx.post(server.url + "/v2/models/iris/infer", json=iris(1, width=3)) for _ in range(3)]
    elapsed = time.monotonic() - started
    done.set()
    watcher.join()
    after = scrape(server.url)

    assert statuses == [200] * 40 and [r.status_code for r in bad] == [400] * 3
    assert scrapes, "no scrape happened during the traffic"

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"protocol": "rest", "route": INFER, "model": "iris", "version": "1"}
    assert delta("pinnace_requests_total", **ok, outcome="success") == 40
    assert delta("pinnace_requests_total", **ok, outcome="invalid") == 3
    iris_v1 = {"model": "iris", "version": "1"}
    assert delta("pinnace_request_duration_seconds_count", protocol="rest", **iris_v1) == 43
    total_s = delta("pinnace_request_duration_seconds_sum", protocol="rest", **iris_v1)
    assert 0 < total_s < elapsed * 4  # 4 clients at most in flight at once
    # Batches may merge concurrent requests, but every row is counted exactly once.
    assert delta("pinnace_batch_size_sum", **iris_v1) == 100
    executions = delta("pinnace_batch_size_count", **iris_v1)
    assert 10 <= executions <= 40  # at most 4 requests share a batch here
    assert delta("pinnace_compute_duration_seconds_count", **iris_v1) == executions
    assert delta("pinnace_queue_duration_seconds_count", **iris_v1) == 40
    compute_s = delta("pinnace_compute_duration_seconds_sum", **iris_v1)
    assert 0 < compute_s < total_s
    # 4 clients with at most 4 rows each: no batch exceeds 16 rows.
    assert delta("pinnace_batch_size_bucket", **iris_v1, le="16.0") == executions
    # Counters never go backwards between scrapes taken under traffic.
    series = ("pinnace_requests_total", frozenset({**ok, "outcome": "success"}.items()))
    seen = [s.get(series, 0.0) for s in [before, *scrapes, after]]
    assert seen == sorted(seen)


def test_model_state_loads_and_process_metrics(server: ServerProcess) -> None:
    samples = scrape(server.url)
    assert value(samples, "pinnace_model_loads_total", model="iris", version="1", outcome="success") == 1
    assert value(samples, "pinnace_model_loads_total", model="broken", version="1", outcome="failure") == 1
    assert value(samples, "pinnace_model_state", model="broken", state="UNAVAILABLE") == 1
    assert value(samples, "pinnace_model_state", model="iris", state="READY") == 1
    assert value(samples, "pinnace_model_load_duration_seconds", model="iris", version="1") > 0
    assert value(samples, "pinnace_model_artifact_bytes", model="iris", version="1") > 0
    assert value(samples, "pinnace_queue_depth", model="iris", version="1") == 0
    assert value(samples, "pinnace_inflight_requests", model="iris", version="1") == 0
    assert value(samples, "pinnace_server_ready") == 1
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_cpu_seconds_total") > 0
    names = {name for name, _ in samples}
    # Prometheus conventions: base units, _total on counters.
    assert {n for n in names if n.startswith("pinnace_") and "duration" in n} <= {
        f"pinnace_{m}_duration_seconds_{s}"
        for m in ("request", "queue", "compute") for s in ("bucket", "sum", "count")
    } | {"pinnace_model_load_duration_seconds"}


def test_ten_thousand_random_model_names_add_no_series(server: ServerProcess) -> None:
    rng = random.Random(2024)

    def name() -> str:
        return "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(1, 40)))

    shapes: list[Callable[[], tuple[str, str]]] = [
        lambda: ("POST", f"/v2/models/{name()}/infer"),
        lambda: ("POST", f"/v2/models/{name()}/versions/{rng.randint(1, 10**9)}/infer"),
        lambda: ("POST", f"/v2/models/iris/versions/{rng.randint(2, 10**9)}/infer"),
        lambda: ("GET", f"/v2/models/{name()}"),
        lambda: ("GET", f"/v2/models/{name()}/ready"),
        lambda: ("GET", f"/v2/models/{name()}/stats"),
        lambda: ("GET", f"/{name()}/{name()}"),
        lambda: ("DELETE", f"/v2/models/{name()}/infer"),
    ]
    requests = [rng.choice(shapes)() for _ in range(10_000)]
    body = b'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}'

    def send(batch: list[tuple[str, str]]) -> set[int]:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return {http.request(m, p, content=body if m == "POST" else None).status_code for m, p in batch}

    send([shape() for shape in shapes])  # the first of each kind makes its __unknown__ series
    scrape(server.url)  # and so does the first scrape
    before = set(scrape(server.url))
    with ThreadPoolExecutor(4) as pool:
        statuses = set().union(*pool.map(send, [requests[i::4] for i in range(4)]))
    after = set(scrape(server.url))
    assert statuses <= {400, 404, 405}
    assert after == before, sorted(after - before)[:10]


def test_grpc_calls_are_counted_with_rpc_names_and_guarded_labels(server: ServerProcess) -> None:
    before = scrape(server.url)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("input", [2, 4], "FP32")
    x.set_data_from_numpy(np.ones((2, 4), dtype=np.float32))
    for _ in range(5):
        client.infer("iris", [x])
    rng = random.Random(5)
    for _ in range(3):  # the first unknown name makes the __unknown__ series
        with pytest.raises(Exception, match="unknown model"):
            client.infer("".join(rng.choices(string.ascii_letters, k=20)), [x])
    middle = scrape(server.url)
    for _ in range(50):
        with pytest.raises(Exception, match="unknown model"):
            client.infer("".join(rng.choices(string.ascii_letters, k=20)), [x])
    after = scrape(server.url)
    client.close()

    ok = {"protocol": "grpc", "route": "ModelInfer", "model": "iris", "version": "1"}
    assert value(after, "pinnace_requests_total", **ok, outcome="success") - value(
        before, "pinnace_requests_total", **ok, outcome="success") == 5
    unknown = {"protocol": "grpc", "route": "ModelInfer", "model": "__unknown__", "version": ""}
    assert value(after, "pinnace_requests_total", **unknown, outcome="not_found") == 53
    assert value(after, "pinnace_request_duration_seconds_count", protocol="grpc", model="iris", version="1") == 5
    assert set(after) - set(middle) <= {
        ("pinnace_requests_total", frozenset({"protocol": "rest", "route": "/metrics", "model": "",
                                               "version": "", "outcome": "success"}.items()))
    }
