"""KerasRuntime: Keras 3 models built here and saved as .keras and legacy .h5; Lambda layers
only when trusted and hashed."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import ModelLoadError, TrustError
from pinnace.manifest import Manifest, parse_manifest
from pinnace.repository.integrity import verify_version

pytest.importorskip("tensorflow")
from pinnace.runtimes.keras import KerasRuntime, select_backend

select_backend(None)  # before keras is imported, as the runtime itself does
keras = pytest.importorskip("keras")

ROWS = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)


def manifest(**fields: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump({"name": "m", "runtime": "keras", **fields}))


def saved(tmp_path: Path, model: Any, filename: str) -> Path:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True, exist_ok=True)
    model.save(version / filename)
    return version


def loaded(version: Path, **fields: Any) -> KerasRuntime:
    """Load as the repository does: its trust gate first, then the runtime."""
    m = manifest(**fields)
    verify_version(m, version.parent, version, runs_code_on_load=KerasRuntime.runs_code(m))
    runtime = KerasRuntime(m, version)
    runtime.load()
    return runtime


def mlp() -> Any:
    keras.utils.set_random_seed(0)
    features = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(features)
    return keras.Model(features, keras.layers.Dense(3, activation="softmax", name="probs")(hidden))


@pytest.mark.parametrize("filename", ["model.keras", "model.h5"])
def test_predictions_match_keras(tmp_path: Path, filename: str) -> None:
    model = mlp()
    version = saved(tmp_path, model, filename)
    inputs, outputs = KerasRuntime.inspect(version / filename)  # type: ignore[misc]
    assert [(t.name, t.datatype, t.shape) for t in inputs] == [("features", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, t.shape) for t in outputs] == [("probs", "FP32", [-1, 3])]
    runtime = loaded(version, model_file=filename)
    result = runtime.predict({"features": ROWS}, ["probs"])
    np.testing.assert_allclose(result["probs"], model.predict(ROWS, verbose=0), rtol=0, atol=1e-5)
    # A different batch size reuses the traced graph (no retracing warning is an error here).
    assert runtime.predict({"features": ROWS[:2]}, [])["probs"].shape == (2, 3)
    assert runtime.metadata_parameters() == {"keras_backend": "tensorflow"}


def test_dict_inputs_and_outputs_keep_their_names(tmp_path: Path) -> None:
    a = keras.Input(shape=(2,), name="a")
    b = keras.Input(shape=(3,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model({"a": a, "b": b}, {"score": keras.layers.Dense(1)(joined), "logits": keras.layers.Dense(2)(joined)})
    version = saved(tmp_path, model, "model.keras")
    inputs, outputs = KerasRuntime.inspect(version / "model.keras")  # type: ignore[misc]
    assert {t.name for t in inputs} == {"a", "b"} and {t.name for t in outputs} == {"score", "logits"}
    feed = {"a": ROWS[:, :2].copy(), "b": ROWS[:, 1:].copy()}
    result = loaded(version).predict(feed, [])
    expected = model.predict(feed, verbose=0)
    for name in ("score", "logits"):
        np.testing.assert_allclose(result[name], expected[name], atol=1e-5)


def test_sequential_outputs_are_numbered(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(2)])
    result = loaded(saved(tmp_path, model, "model.keras")).predict({"input_layer": ROWS}, [])
    np.testing.assert_allclose(result["output_0"], model.predict(ROWS, verbose=0), atol=1e-5)


def lambda_model() -> Any:
    return keras.Sequential([keras.Input(shape=(4,), name="x"), keras.layers.Lambda(lambda t: t * 2)])


@pytest.mark.parametrize("filename", ["model.keras", "model.h5"])
def test_lambda_layers_need_trust(tmp_path: Path, filename: str) -> None:
    version = saved(tmp_path, lambda_model(), filename)
    with pytest.raises(ModelLoadError, match="trusted: true") as caught:
        loaded(version, model_file=filename)
    assert not isinstance(caught.value, TrustError)  # refused by Keras' safe mode, before any code ran
    with pytest.raises(TrustError, match="sha256"):
        loaded(version, model_file=filename, trusted=True)
    digest = hashlib.sha256((version / filename).read_bytes()).hexdigest()
    runtime = loaded(version, model_file=filename, trusted=True, artifacts={f"1/{filename}": digest})
    np.testing.assert_allclose(runtime.predict({"x": ROWS}, [])["output_0"], ROWS * 2, atol=1e-6)


@pytest.mark.parametrize("filename", ["model.keras", "model.h5"])
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.98])
def test_truncated_files_fail_cleanly(tmp_path: Path, filename: str, keep: float) -> None:
    version = saved(tmp_path, mlp(), filename)
    path = version / filename
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError) as caught:
        loaded(version, model_file=filename)
    assert filename in caught.value.message and str(tmp_path) not in caught.value.message


def test_one_backend_per_process(tmp_path: Path) -> None:
    version = saved(tmp_path, mlp(), "model.keras")
    with pytest.raises(ModelLoadError, match="already runs on 'tensorflow'"):
        loaded(version, options={"backend": "torch"})
