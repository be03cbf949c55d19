"""The statistics extension read by tritonclient.http from a real ``pinnace serve``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.utils import InferenceServerException

from tests.conftest import EXAMPLES
from tests.servers import ServerProcess, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("stats") / "models"
    repo.mkdir()
    shutil.copytree(EXAMPLES / "iris", repo / "iris")
    shutil.copytree(EXAMPLES / "mlp", repo / "mlp")
    with running_server(repo, grpc=False) as process:
        yield process


def infer(client: httpclient.InferenceServerClient, rows: int, width: int = 4) -> None:
    x = httpclient.InferInput("input", [rows, width], "FP32")
    x.set_data_from_numpy(np.ones((rows, width), dtype=np.float32))
    client.infer("iris", [x])


def test_tritonclient_reads_counts_durations_and_batch_stats(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    for rows in (1, 2, 2, 5):
        infer(client, rows)
    with pytest.raises(InferenceServerException):
        infer(client, 1, width=3)  # refused by the signature check: a failure

    stats = client.get_inference_statistics("iris")
    (model,) = stats["model_stats"]
    assert (model["name"], model["version"]) == ("iris", "1")
    assert model["inference_count"] == 10  # rows
    assert model["execution_count"] == 4  # one client, one request at a time
    assert model["last_inference"] > 0
    s = model["inference_stats"]
    assert s["success"]["count"] == 4 and s["fail"]["count"] == 1
    for key in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert s[key]["count"] == 4, key
    assert 0 < s["compute_infer"]["ns"] < s["success"]["ns"]
    assert s["cache_hit"] == {"count": 0, "ns": 0}
    by_size = {b["batch_size"]: b for b in model["batch_stats"]}
    assert sorted(by_size) == [1, 2, 5]
    assert by_size[2]["compute_infer"]["count"] == 2
    # Exactly Triton's schema: ParseDict refuses unknown fields and wrong types.
    json_format.ParseDict(stats, triton_pb.ModelStatisticsResponse())


def test_all_models_and_one_version(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    everything = client.get_inference_statistics()
    assert sorted(m["name"] for m in everything["model_stats"]) == ["iris", "mlp"]
    json_format.ParseDict(everything, triton_pb.ModelStatisticsResponse())
    (one,) = client.get_inference_statistics("iris", "1")["model_stats"]
    assert one["version"] == "1"
    with pytest.raises(InferenceServerException):
        client.get_inference_statistics("no-such-model")
