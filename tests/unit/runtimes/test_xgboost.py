"""XGBoostRuntime: real boosters trained here, saved as JSON and UBJSON, predicted exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest import Manifest, parse_manifest

xgb = pytest.importorskip("xgboost")

from pinnace.runtimes.xgboost import XGBoostRuntime  # noqa: E402

rng = np.random.default_rng(0)
X = rng.standard_normal((120, 5)).astype(np.float32)


def manifest(**fields: Any) -> Manifest:
    doc = {"name": "m", "runtime": "xgboost", **fields}
    return parse_manifest(yaml.safe_dump(doc))


def saved(tmp_path: Path, model: Any, filename: str) -> Path:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    model.save_model(version / filename)
    return version


def loaded(version: Path, **fields: Any) -> XGBoostRuntime:
    runtime = XGBoostRuntime(manifest(**fields), version)
    runtime.load()
    return runtime


@pytest.mark.parametrize("filename", ["model.json", "model.ubj"])
def test_multiclass_classifier_matches_xgboost_exactly(tmp_path: Path, filename: str) -> None:
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    clf = xgb.XGBClassifier(n_estimators=6, max_depth=3, n_jobs=1).fit(X, y)
    version = saved(tmp_path, clf, filename)
    inputs, outputs = XGBoostRuntime.inspect(version / filename)  # type: ignore[misc]
    runtime = loaded(version, model_file=filename, inputs=[yaml.safe_load(_dump(i)) for i in inputs],
                     outputs=[yaml.safe_load(_dump(o)) for o in outputs])
    result = runtime.predict({"input": X}, ["predict", "predict_proba"])
    np.testing.assert_array_equal(result["predict_proba"], clf.predict_proba(X))
    np.testing.assert_array_equal(result["predict"], clf.predict(X))
    assert result["predict"].dtype == np.int64
    assert runtime.metadata_parameters() == {"objective": "multi:softprob", "features": 5}


def test_binary_classifier_probabilities_are_two_columns(tmp_path: Path) -> None:
    clf = xgb.XGBClassifier(n_estimators=5, max_depth=2, n_jobs=1).fit(X, X[:, 2] > 0)
    runtime = loaded(saved(tmp_path, clf, "model.json"))
    result = runtime.predict({"anything": X}, [])
    np.testing.assert_array_equal(result["predict_proba"], clf.predict_proba(X))
    np.testing.assert_array_equal(result["predict"], clf.predict(X))


def test_regressor_and_its_inferred_signature(tmp_path: Path) -> None:
    reg = xgb.XGBRegressor(n_estimators=5, max_depth=3, n_jobs=1).fit(X, X[:, 0] * 3 + 1)
    version = saved(tmp_path, reg, "model.ubj")
    inputs, outputs = XGBoostRuntime.inspect(version / "model.ubj")  # type: ignore[misc]
    assert [(t.name, t.datatype, t.shape, t.allow_nan) for t in inputs] == [("input", "FP32", [-1, 5], True)]
    assert [(t.name, t.datatype, t.shape) for t in outputs] == [("predict", "FP32", [-1])]
    result = loaded(version).predict({"input": X}, ["predict"])
    np.testing.assert_array_equal(result["predict"], reg.predict(X))


def test_missing_values_are_routed_like_xgboost(tmp_path: Path) -> None:
    reg = xgb.XGBRegressor(n_estimators=5, max_depth=3, n_jobs=1).fit(X, X[:, 0])
    rows = X[:4].copy()
    rows[1, 0] = np.nan
    result = loaded(saved(tmp_path, reg, "model.json")).predict({"input": rows}, ["predict"])
    np.testing.assert_array_equal(result["predict"], reg.predict(rows))


def test_output_roles_map_other_names(tmp_path: Path) -> None:
    clf = xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(X, X[:, 2] > 0)
    version = saved(tmp_path, clf, "model.json")
    runtime = loaded(
        version,
        outputs=[{"name": "output__0", "datatype": "FP32", "shape": [-1, 2]}],
        options={"output_roles": {"output__0": "predict_proba"}},
    )
    np.testing.assert_array_equal(runtime.predict({"x": X}, ["output__0"])["output__0"], clf.predict_proba(X))


def test_regressors_have_no_probabilities(tmp_path: Path) -> None:
    reg = xgb.XGBRegressor(n_estimators=2, n_jobs=1).fit(X, X[:, 0])
    runtime = XGBoostRuntime(
        manifest(outputs=[{"name": "predict_proba", "datatype": "FP32", "shape": [-1, 2]}]),
        saved(tmp_path, reg, "model.json"),
    )
    with pytest.raises(ModelLoadError, match="probabilities"):
        runtime.load()


def test_unknown_options_fail_loudly(tmp_path: Path) -> None:
    reg = xgb.XGBRegressor(n_estimators=2, n_jobs=1).fit(X, X[:, 0])
    runtime = XGBoostRuntime(manifest(options={"thread": 2}), saved(tmp_path, reg, "model.json"))
    with pytest.raises(ModelLoadError, match=r"options\.thread is not an option"):
        runtime.load()


def test_wrong_feature_count_is_the_clients_error(tmp_path: Path) -> None:
    reg = xgb.XGBRegressor(n_estimators=2, n_jobs=1).fit(X, X[:, 0])
    runtime = loaded(saved(tmp_path, reg, "model.json"))
    with pytest.raises(InvalidInputError, match="5 features"):
        runtime.predict({"input": X[:, :3]}, ["predict"])


@pytest.mark.parametrize("filename", ["model.json", "model.ubj"])
@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.97])
def test_truncated_models_fail_with_a_clear_error(tmp_path: Path, filename: str, keep: float) -> None:
    clf = xgb.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(X, X[:, 2] > 0)
    version = saved(tmp_path, clf, filename)
    path = version / filename
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError) as caught:
        loaded(version)
    message = caught.value.message
    assert filename in message and ("corrupt" in message or "empty" in message)
    assert str(tmp_path) not in message and "Stack trace" not in message


def _dump(signature: Any) -> str:
    import msgspec

    return yaml.safe_dump(msgspec.to_builtins(signature))
