"""TensorFlowRuntime: a SavedModel written here, its signature checked against the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import ModelLoadError
from pinnace.manifest import Manifest, parse_manifest

tf = pytest.importorskip("tensorflow")

from pinnace.runtimes.tensorflow import TensorFlowRuntime  # noqa: E402
from tests.unit.runtimes._tf_models import Linear  # noqa: E402

ROWS = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
TAGS = np.array([b"a", b"bc", b"", b"d", b"e"], dtype=object)
INPUTS = [
    {"name": "tag", "datatype": "BYTES", "shape": [-1]},
    {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
]
OUTPUTS = [
    {"name": "echo", "datatype": "BYTES", "shape": [-1]},
    {"name": "label", "datatype": "INT64", "shape": [-1]},
    {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    version = tmp_path_factory.mktemp("tf") / "m" / "1"
    module = Linear()
    tf.saved_model.save(module, str(version / "model.savedmodel"), signatures={"serving_default": module.serve})
    return version, module


def manifest(**fields: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump({"name": "m", "runtime": "tensorflow", **fields}))


def loaded(version: Path, **fields: Any) -> TensorFlowRuntime:
    runtime = TensorFlowRuntime(manifest(**fields), version)
    runtime.load()
    return runtime


def test_signature_is_inferred(saved: tuple[Path, Any]) -> None:
    version, _ = saved
    inputs, outputs = TensorFlowRuntime.inspect(version / "model.savedmodel")  # type: ignore[misc]
    assert [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in inputs] == INPUTS
    assert [{"name": t.name, "datatype": t.datatype, "shape": t.shape} for t in outputs] == OUTPUTS


def test_predictions_match_tensorflow(saved: tuple[Path, Any]) -> None:
    version, module = saved
    runtime = loaded(version, inputs=INPUTS, outputs=OUTPUTS, batching={"max_batch_size": 8})
    result = runtime.predict({"x": ROWS, "tag": TAGS}, ["scores", "label", "echo"])
    expected = module.serve(tf.constant(ROWS), tf.constant(TAGS))
    np.testing.assert_allclose(result["scores"], expected["scores"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(result["label"], expected["label"].numpy())
    assert list(result["echo"]) == [b"A", b"BC", b"", b"D", b"E"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}, "input 'y' is not in signature"),
        ({"inputs": [INPUTS[0], {"name": "x", "datatype": "FP64", "shape": [-1, 4]}]}, "FP64 in the manifest"),
        ({"inputs": [INPUTS[0], {"name": "x", "datatype": "FP32", "shape": [-1, 5]}]}, r"shape \[-1, 5\]"),
        ({"inputs": [INPUTS[1]]}, "needs input 'tag'"),
        ({"outputs": [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]}, "output 'probs'"),
        ({"options": {"signature": "predict"}}, "no signature 'predict'"),
    ],
)
def test_manifest_is_checked_against_the_signature(saved: tuple[Path, Any], change: dict[str, Any], message: str) -> None:
    version, _ = saved
    with pytest.raises(ModelLoadError, match=message):
        loaded(version, **{"inputs": INPUTS, "outputs": OUTPUTS, **change})


def test_damaged_saved_models_fail_cleanly(tmp_path: Path, saved: tuple[Path, Any]) -> None:
    import shutil

    version, _ = saved
    for victim in ("saved_model.pb", "variables/variables.data-00000-of-00001"):
        copy = tmp_path / victim.replace("/", "_") / "m" / "1"
        shutil.copytree(version, copy)
        path = copy / "model.savedmodel" / victim
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        with pytest.raises(ModelLoadError) as caught:
            loaded(copy, inputs=INPUTS, outputs=OUTPUTS)
        assert "model.savedmodel" in caught.value.message and str(tmp_path) not in caught.value.message


def test_a_missing_folder_says_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    with pytest.raises(ModelLoadError, match=r"'model\.savedmodel' is missing"):
        loaded(tmp_path / "m" / "1")
