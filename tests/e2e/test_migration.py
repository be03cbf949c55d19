"""Migration from Triton and MLServer: their repositories served unchanged by a real
``pinnace serve``, and converted by the real ``pinnace init --from`` then served, with REST
predictions equal to each framework's own. Settings pinnace refuses make only their model
unavailable, with a reason naming the key."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.servers import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
torch = pytest.importorskip("torch")
ov = pytest.importorskip("openvino")
joblib = pytest.importorskip("joblib")
sklearn_linear = pytest.importorskip("sklearn.linear_model")
datasets = pytest.importorskip("sklearn.datasets")

from examples.formats.onnx_providers_model import mlp_onnx  # noqa: E402
from examples.formats.torchscript_model import Classifier  # noqa: E402

X, Y = datasets.load_iris(return_X_y=True)
X32 = X.astype(np.float32)
ROWS = slice(0, 150, 11)


# -- the source repositories, written the way Triton and MLServer users write them ----------

def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(textwrap.dedent(text))


def build_triton(root: Path, *, refused: bool) -> dict[str, dict[str, np.ndarray]]:
    """Triton models and the predictions their own frameworks make for X32[ROWS]."""
    rows = X32[ROWS]
    expected: dict[str, dict[str, np.ndarray]] = {}

    model = mlp_onnx(seed=7)
    write(root / "mlp-onnx" / "1" / "model.onnx", model.SerializeToString())
    write(root / "mlp-onnx" / "config.pbtxt", """
        name: "mlp-onnx"
        platform: "onnxruntime_onnx"
        max_batch_size: 32
        input [ { name: "x", data_type: TYPE_FP32, dims: [ 4 ] } ]
        output [ { name: "probabilities", data_type: TYPE_FP32, dims: [ 3 ] } ]
        dynamic_batching { max_queue_delay_microseconds: 200 }
        instance_group [ { count: 2, kind: KIND_CPU } ]
    """)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected["mlp-onnx"] = {"probabilities": session.run(None, {"x": rows})[0]}

    # Triton's auto-complete: no inputs/outputs, read from the model.
    write(root / "auto-onnx" / "1" / "model.onnx", model.SerializeToString())
    write(root / "auto-onnx" / "config.pbtxt", 'backend: "onnxruntime"\nmax_batch_size: 16\n')
    expected["auto-onnx"] = expected["mlp-onnx"]

    torch.manual_seed(0)
    net = Classifier().eval()
    (root / "torch-classifier" / "1").mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(net).save(str(root / "torch-classifier" / "1" / "model.pt"))
    write(root / "torch-classifier" / "config.pbtxt", """
        platform: "pytorch_libtorch"
        max_batch_size: 16
        input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [
          { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] },
          { name: "OUTPUT__1" data_type: TYPE_FP32 dims: [ 3 ] }
        ]
    """)
    with torch.no_grad():
        probabilities, logits = net(torch.from_numpy(rows))
    expected["torch-classifier"] = {"OUTPUT__0": probabilities.numpy(), "OUTPUT__1": logits.numpy()}

    (root / "ov-ir" / "1").mkdir(parents=True)
    ov_model = ov.convert_model(str(root / "mlp-onnx" / "1" / "model.onnx"))
    ov.save_model(ov_model, str(root / "ov-ir" / "1" / "model.xml"), compress_to_fp16=False)
    write(root / "ov-ir" / "config.pbtxt", """
        backend: "openvino"
        max_batch_size: 0
        input [ { name: "x", data_type: TYPE_FP32, dims: [ -1, 4 ] } ]
        output [ { name: "probabilities", data_type: TYPE_FP32, dims: [ -1, 3 ] } ]
        parameters: { key: "INFERENCE_NUM_THREADS" value: { string_value: "1" } }
    """)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(root / "ov-ir" / "1" / "model.xml")), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32"})
    expected["ov-ir"] = {"probabilities": np.array(compiled({"x": rows})[compiled.outputs[0]])}

    booster = xgb.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1).fit(X32, Y)
    write(root / "fil-xgb" / "1" / "xgboost.json", b"")
    booster.save_model(root / "fil-xgb" / "1" / "xgboost.json")
    write(root / "fil-xgb" / "config.pbtxt", """
        backend: "fil"
        max_batch_size: 64
        input [ { name: "input__0" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "output__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
        instance_group [ { kind: KIND_CPU } ]
        parameters [
          { key: "model_type" value: { string_value: "xgboost_json" } },
          { key: "output_class" value: { string_value: "true" } },
          { key: "predict_proba" value: { string_value: "true" } }
        ]
        dynamic_batching { }
    """)
    expected["fil-xgb"] = {"output__0": booster.predict_proba(rows)}

    if refused:
        write(root / "ensemble-pipeline" / "1" / ".keep", b"")
        write(root / "ensemble-pipeline" / "config.pbtxt", """
            platform: "ensemble"
            max_batch_size: 8
            input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
            output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
            ensemble_scheduling { step [ { model_name: "mlp-onnx" model_version: -1 } ] }
        """)
    return expected


def build_mlserver(root: Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
    """MLServer models; returns (what MLServer answers by default, what predict_proba gives)."""
    rows = X[ROWS]
    defaults: dict[str, dict[str, np.ndarray]] = {}
    proba: dict[str, dict[str, np.ndarray]] = {}

    classifier = xgb.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1).fit(X32, Y)
    classifier.save_model(_mk(root / "iris-xgboost" / "model.json"))
    write(root / "iris-xgboost" / "model-settings.json", json.dumps({
        "name": "iris-xgboost",
        "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.json", "version": "v0.1.0"},
    }))
    defaults["iris-xgboost"] = {"predict": classifier.predict(X32[ROWS])}
    proba["iris-xgboost"] = {"predict_proba": classifier.predict_proba(X32[ROWS])}

    lgbm = lgb.LGBMClassifier(n_estimators=6, num_leaves=5, verbose=-1, n_jobs=1).fit(X, Y)
    lgbm.booster_.save_model(_mk(root / "iris-lightgbm" / "model.bst"))
    write(root / "iris-lightgbm" / "model-settings.json", json.dumps({
        "name": "iris-lightgbm", "implementation": "mlserver_lightgbm.LightGBMModel",
    }))
    # mlserver_lightgbm answers "predict" with Booster.predict: class probabilities.
    defaults["iris-lightgbm"] = {"predict": lgbm.booster_.predict(rows)}

    estimator = sklearn_linear.LogisticRegression(max_iter=300).fit(X, Y)
    joblib.dump(estimator, _mk(root / "iris-sklearn" / "model.joblib"))
    write(root / "iris-sklearn" / "model-settings.json", json.dumps({
        "name": "iris-sklearn", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib"},
    }))
    defaults["iris-sklearn"] = {"predict": estimator.predict(rows)}
    proba["iris-sklearn"] = {"predict_proba": estimator.predict_proba(rows)}
    return defaults, proba


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


# -- servers --------------------------------------------------------------------------------

class Sources:
    def __init__(self, root: Path) -> None:
        self.triton = root / "triton"
        self.mlserver = root / "mlserver"
        self.converted = root / "converted"
        self.triton_expected = build_triton(self.triton, refused=True)
        self.mlserver_defaults, self.mlserver_proba = build_mlserver(self.mlserver)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    return Sources(tmp_path_factory.mktemp("migration"))


def serve(repo: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(repo, grpc=False, extra=["--no-strict-readiness"])
    try:
        server.wait_ready(120)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def triton_server(sources: Sources) -> Iterator[ServerProcess]:
    yield from serve(sources.triton)


@pytest.fixture(scope="module")
def mlserver_server(sources: Sources) -> Iterator[ServerProcess]:
    yield from serve(sources.mlserver)


@pytest.fixture(scope="module")
def converted_server(sources: Sources, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    clean_triton = tmp_path_factory.mktemp("triton-clean")
    build_triton(clean_triton, refused=False)
    for kind, source, extra in (("triton", clean_triton, []), ("mlserver", sources.mlserver, ["--trusted"])):
        done = subprocess.run(
            [sys.executable, "-m", "pinnace", "init", "--from", kind, str(source), "--repo", str(sources.converted),
             *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 0, done.stderr
    yield from serve(sources.converted)


def infer(server: ServerProcess, model: str, name: str, datatype: str, rows: np.ndarray,
          outputs: list[str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": name, "datatype": datatype, "shape": list(rows.shape), "data": rows.ravel().tolist()}]
    }
    if outputs:
        body["outputs"] = [{"name": o} for o in outputs]
    return httpx.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=30)


def check(response: httpx.Response, expected: dict[str, np.ndarray], *, exact: bool) -> None:
    assert response.status_code == 200, response.text
    got = {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in response.json()["outputs"]}
    for name, want in expected.items():
        assert got[name].shape == want.shape, name
        if exact:
            np.testing.assert_array_equal(got[name].astype(want.dtype), want, err_msg=name)
        else:
            np.testing.assert_allclose(got[name], want, rtol=0, atol=1e-5, err_msg=name)


TRITON_INPUTS = {"mlp-onnx": "x", "auto-onnx": "x", "torch-classifier": "INPUT__0", "ov-ir": "x", "fil-xgb": "input__0"}


# -- Triton ------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", sorted(TRITON_INPUTS))
def test_triton_repository_served_unchanged(triton_server: ServerProcess, sources: Sources, model: str) -> None:
    response = infer(triton_server, model, TRITON_INPUTS[model], "FP32", X32[ROWS])
    check(response, sources.triton_expected[model], exact=model == "fil-xgb")


def test_triton_refused_settings_name_their_key(triton_server: ServerProcess) -> None:
    response = infer(triton_server, "ensemble-pipeline", "x", "FP32", X32[ROWS])
    assert response.status_code == 503
    reason = response.json()["error"]
    assert "ensemble-pipeline/config.pbtxt: 'platform' is not supported" in reason, reason
    assert httpx.get(f"{triton_server.url}/v2/models/mlp-onnx/ready").status_code == 200


def test_triton_metadata_keeps_the_batch_dimension(triton_server: ServerProcess) -> None:
    meta = httpx.get(f"{triton_server.url}/v2/models/torch-classifier").json()
    assert meta["inputs"] == [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["platform"] == "pytorch_libtorch"


# -- MLServer ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["iris-xgboost", "iris-lightgbm"])
def test_mlserver_repository_served_unchanged(mlserver_server: ServerProcess, sources: Sources, model: str) -> None:
    # MLServer clients name their single input freely and get "predict" by default.
    datatype, rows = ("FP32", X32[ROWS]) if model == "iris-xgboost" else ("FP64", X[ROWS])
    response = infer(mlserver_server, model, "input-0", datatype, rows, ["predict"])
    check(response, sources.mlserver_defaults[model], exact=True)


def test_mlserver_xgboost_predict_proba(mlserver_server: ServerProcess, sources: Sources) -> None:
    response = infer(mlserver_server, "iris-xgboost", "input-0", "FP32", X32[ROWS], ["predict_proba"])
    check(response, sources.mlserver_proba["iris-xgboost"], exact=True)


def test_unconverted_sklearn_is_refused_with_the_way_out(mlserver_server: ServerProcess) -> None:
    response = infer(mlserver_server, "iris-sklearn", "input-0", "FP64", X[ROWS])
    assert response.status_code == 503
    assert "pinnace init --from mlserver SRC --repo DEST --trusted" in response.json()["error"]


# -- converted with `pinnace init --from` ------------------------------------------------------

@pytest.mark.parametrize("model", sorted(TRITON_INPUTS))
def test_converted_triton_models_serve_the_same(converted_server: ServerProcess, sources: Sources, model: str) -> None:
    response = infer(converted_server, model, TRITON_INPUTS[model], "FP32", X32[ROWS])
    check(response, sources.triton_expected[model], exact=model == "fil-xgb")


@pytest.mark.parametrize("model", ["iris-xgboost", "iris-lightgbm", "iris-sklearn"])
def test_converted_mlserver_models_serve_the_same(converted_server: ServerProcess, sources: Sources, model: str) -> None:
    datatype, rows = ("FP32", X32[ROWS]) if model == "iris-xgboost" else ("FP64", X[ROWS])
    check(infer(converted_server, model, "input-0", datatype, rows, ["predict"]), sources.mlserver_defaults[model],
          exact=True)
    if model in sources.mlserver_proba:
        check(infer(converted_server, model, "input-0", datatype, rows, ["predict_proba"]),
              sources.mlserver_proba[model], exact=True)


def test_converted_manifests_record_hashes_and_what_was_dropped(converted_server: ServerProcess,
                                                                sources: Sources) -> None:
    text = (sources.converted / "iris-xgboost" / "model.yaml").read_text()
    assert "# Review before serving" in text and "'v0.1.0' is served as version 1" in text
    assert "1/model.json:" in text
    sklearn_manifest = (sources.converted / "iris-sklearn" / "model.yaml").read_text()
    assert "trusted: true" in sklearn_manifest and "1/model.joblib:" in sklearn_manifest
