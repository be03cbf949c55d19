"""Every model format through a real ``pinnace serve``: the runnable examples in
examples/formats build each model with its framework and save it the way its users do; one
server serves them all, beside a truncated copy of each, and REST answers must equal the
framework's own predictions (exactly for trees, within 1e-5 for floats) while the damaged
copies fail to load with a clear reason and take nothing else down."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.servers import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# (example module, framework it needs) → the models it builds.
EXAMPLES: dict[str, tuple[str, list[str]]] = {
    "xgboost_model": ("xgboost", ["xgb-iris", "xgb-regressor"]),
    "lightgbm_model": ("lightgbm", ["lgbm-iris"]),
    "torchscript_model": ("torch", ["torch-mlp"]),
    "keras_model": ("keras", ["keras-mlp", "keras-h5"]),
    "tensorflow_model": ("tensorflow", ["tf-linear"]),
    "openvino_model": ("openvino", ["ov-ir", "ov-onnx"]),
    "onnx_providers_model": ("onnxruntime", ["onnx-providers"]),
}
MODELS = [(module, model) for module, (_, models) in EXAMPLES.items() for model in models]
# The artifact each corrupt copy gets truncated: the one its framework parses first.
DAMAGE = {
    "xgb-iris": "model.json", "xgb-regressor": "model.ubj", "lgbm-iris": "model.txt", "torch-mlp": "model.pt",
    "keras-mlp": "model.keras", "keras-h5": "model.h5", "tf-linear": "model.savedmodel/saved_model.pb",
    "ov-ir": "model.xml", "ov-onnx": "model.onnx", "onnx-providers": "model.onnx",
}


class Served:
    def __init__(self, server: ServerProcess, samples: dict[str, dict[str, Any]], repo: Path) -> None:
        self.server = server
        self.samples = samples
        self.repo = repo


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    repo = tmp_path_factory.mktemp("formats") / "models"
    repo.mkdir()
    samples: dict[str, dict[str, Any]] = {}
    for module, (framework, _) in EXAMPLES.items():
        try:
            importlib.import_module(framework)
        except ImportError:
            continue  # that format's test skips below
        for sample in importlib.import_module(f"examples.formats.{module}").build(repo):
            samples[sample["model"]] = sample
    for name in samples:
        damaged_copy(repo, name)
    server = ServerProcess(repo, grpc=False, extra=["--no-strict-readiness"])
    try:
        server.wait_ready(180)
        yield Served(server, samples, repo)
    finally:
        server.stop()


def damaged_copy(repo: Path, name: str) -> None:
    copy = repo / f"{name}-corrupt"
    shutil.copytree(repo / name, copy)
    manifest = copy / "model.yaml"
    manifest.write_text(manifest.read_text().replace(f"name: {name}\n", f"name: {name}-corrupt\n", 1))
    victim = copy / "1" / DAMAGE[name]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])


def sample_for(served: Served, model: str) -> dict[str, Any]:
    if model not in served.samples:
        pytest.skip(f"the framework for {model} is not installed")
    return served.samples[model]


def infer(served: Served, model: str, inputs: list[tuple[str, str, np.ndarray]]) -> httpx.Response:
    body = {
        "inputs": [
            {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}
            for name, datatype, array in inputs
        ]
    }
    return httpx.post(f"{served.server.url}/v2/models/{model}/infer", json=body, timeout=30)


@pytest.mark.parametrize(("module", "model"), MODELS)
def test_rest_predictions_equal_the_frameworks(served: Served, module: str, model: str) -> None:
    sample = sample_for(served, model)
    response = infer(served, model, sample["inputs"])
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert set(outputs) == set(sample["expected"])
    for name, framework_says in sample["expected"].items():
        got = np.asarray(outputs[name]["data"]).reshape(outputs[name]["shape"])
        expected = np.asarray(framework_says)
        assert got.shape == expected.shape, name
        if sample["exact"]:
            np.testing.assert_array_equal(got.astype(expected.dtype), expected, err_msg=f"{model}.{name}")
        else:
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{model}.{name}")


@pytest.mark.parametrize(("module", "model"), MODELS)
def test_a_truncated_artifact_fails_alone_with_a_clear_reason(served: Served, module: str, model: str) -> None:
    sample = sample_for(served, model)
    url = served.server.url
    assert httpx.get(f"{url}/v2/models/{model}-corrupt/ready").status_code != 200
    response = infer(served, f"{model}-corrupt", sample["inputs"])
    assert response.status_code == 503
    reason = response.json()["error"]
    assert "unavailable" in reason and DAMAGE[model].split("/")[0] in reason, reason
    assert str(served.repo) not in reason and "Traceback" not in reason
    assert httpx.get(f"{url}/v2/models/{model}/ready").status_code == 200


def test_metadata_names_the_platform_and_the_execution_details(served: Served) -> None:
    url = served.server.url
    expected = {
        "xgb-iris": ("xgboost", "objective", "multi:softprob"),
        "lgbm-iris": ("lightgbm", "objective", "multiclass"),
        "torch-mlp": ("pytorch_libtorch", "device", "cpu"),
        "keras-mlp": ("keras", "keras_backend", "tensorflow"),
        "tf-linear": ("tensorflow_savedmodel", "signature", "serving_default"),
        "ov-ir": ("openvino", "inference_precision", "f32"),
    }
    for model, (platform, key, value) in expected.items():
        if model not in served.samples:
            continue
        meta = httpx.get(f"{url}/v2/models/{model}").json()
        assert meta["platform"] == platform and meta["parameters"][key] == value, meta
    if "onnx-providers" in served.samples:
        params = httpx.get(f"{url}/v2/models/onnx-providers").json()["parameters"]
        assert params["execution_providers"].endswith("CPUExecutionProvider")
        assert params["execution_providers_requested"].startswith("TensorrtExecutionProvider")


@pytest.mark.parametrize(
    ("model", "artifact"),
    [
        ("xgb-iris", "model.json"),
        ("lgbm-iris", "model.txt"),
        ("keras-mlp", "model.keras"),
        ("tf-linear", "model.savedmodel"),
        ("ov-ir", "model.xml"),
        ("keras-h5", "model.h5"),
        ("ov-onnx", "model.onnx"),
        ("onnx-providers", "model.onnx"),
    ],
)
def test_pinnace_init_infers_the_examples_signature(
    served: Served, tmp_path: Path, model: str, artifact: str
) -> None:
    from click.testing import CliRunner

    from pinnace.cli.main import main
    from pinnace.manifest import load_manifest

    sample_for(served, model)
    source = served.repo / model / "1" / artifact
    result = CliRunner().invoke(main, ["init", str(source), "--name", model, "--repo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    inferred = load_manifest(tmp_path / model / "model.yaml")
    declared = load_manifest(served.repo / model / "model.yaml")
    assert [(t.name, t.datatype, t.shape) for t in inferred.inputs] == [
        (t.name, t.datatype, t.shape) for t in declared.inputs
    ]
    assert sorted((t.name, t.datatype, t.shape) for t in inferred.outputs) == sorted(
        (t.name, t.datatype, t.shape) for t in declared.outputs
    )
