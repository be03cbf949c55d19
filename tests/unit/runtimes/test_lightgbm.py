"""LightGBMRuntime: boosters trained here, saved as text, predicted exactly; damaged files fail
with a clear error instead of crashing the process (LightGBM's own parser would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import ModelLoadError
from pinnace.manifest import Manifest, parse_manifest

lgb = pytest.importorskip("lightgbm")

from pinnace.runtimes.lightgbm import LightGBMRuntime, validate_model_text  # noqa: E402

rng = np.random.default_rng(0)
X = rng.standard_normal((200, 4))
Y3 = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.3).astype(int)


def manifest(**fields: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump({"name": "m", "runtime": "lightgbm", **fields}))


def saved(tmp_path: Path, booster: Any, filename: str = "model.txt") -> Path:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    booster.save_model(version / filename)
    return version


def loaded(version: Path, **fields: Any) -> LightGBMRuntime:
    runtime = LightGBMRuntime(manifest(**fields), version)
    runtime.load()
    return runtime


def classifier(y: np.ndarray) -> Any:
    return lgb.LGBMClassifier(n_estimators=6, num_leaves=5, n_jobs=1, verbose=-1).fit(X, y)


def test_multiclass_matches_lightgbm_exactly(tmp_path: Path) -> None:
    clf = classifier(Y3)
    version = saved(tmp_path, clf.booster_)
    result = loaded(version).predict({"input": X}, ["predict", "predict_proba"])
    np.testing.assert_array_equal(result["predict_proba"], clf.predict_proba(X))
    np.testing.assert_array_equal(result["predict"], clf.predict(X))


def test_binary_and_the_raw_role(tmp_path: Path) -> None:
    clf = classifier((X[:, 2] > 0).astype(int))
    runtime = loaded(
        saved(tmp_path, clf.booster_),
        outputs=[
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
            {"name": "p1", "datatype": "FP64", "shape": [-1]},
        ],
        options={"output_roles": {"p1": "raw"}},
    )
    result = runtime.predict({"input": X}, [])
    np.testing.assert_array_equal(result["predict_proba"], clf.predict_proba(X))
    np.testing.assert_array_equal(result["predict"], clf.predict(X))
    np.testing.assert_array_equal(result["p1"], clf.booster_.predict(X))


def test_regressor_signature_and_predictions(tmp_path: Path) -> None:
    reg = lgb.LGBMRegressor(n_estimators=6, num_leaves=5, n_jobs=1, verbose=-1).fit(X, X[:, 0] * 2)
    version = saved(tmp_path, reg.booster_, "model.bst")  # MLServer's well-known name
    inputs, outputs = LightGBMRuntime.inspect(version / "model.bst")  # type: ignore[misc]
    assert [(t.name, t.datatype, t.shape) for t in inputs] == [("input", "FP64", [-1, 4])]
    assert [(t.name, t.datatype, t.shape) for t in outputs] == [("predict", "FP64", [-1])]
    np.testing.assert_array_equal(loaded(version).predict({"x": X}, ["predict"])["predict"], reg.predict(X))


def test_linear_and_categorical_models_pass_validation(tmp_path: Path) -> None:
    linear = lgb.LGBMRegressor(n_estimators=3, num_leaves=4, linear_tree=True, verbose=-1).fit(X, X[:, 0])
    cats = X.copy()
    cats[:, 1] = np.arange(len(X)) % 5
    categorical = lgb.train(
        {"objective": "regression", "num_leaves": 4, "verbose": -1, "min_data_per_group": 5, "cat_smooth": 1},
        lgb.Dataset(cats, X[:, 0], categorical_feature=[1]),
        num_boost_round=3,
    )
    for booster, _rows in ((linear.booster_, X), (categorical, cats)):
        info = validate_model_text(booster.model_to_string())
        assert info.n_trees == booster.num_trees()
    version = saved(tmp_path, categorical)
    np.testing.assert_array_equal(loaded(version).predict({"x": cats}, ["predict"])["predict"], categorical.predict(cats))


@pytest.mark.parametrize("keep", [0.0, 0.01, 0.2, 0.5, 0.8, 0.995])
def test_truncated_text_fails_cleanly(tmp_path: Path, keep: float) -> None:
    version = saved(tmp_path, classifier(Y3).booster_)
    path = version / "model.txt"
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelLoadError) as caught:
        loaded(version)
    assert "model.txt" in caught.value.message and "corrupt or truncated" in caught.value.message
    assert str(tmp_path) not in caught.value.message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("leaf_value=", "leaf_valve="),  # a missing array
        ("left_child=1", "left_child=9"),  # a child the tree does not have
        ("threshold=", "threshold=1x "),  # an unparsable number
        ("num_leaves=", "num_leaves=\x16"),  # a control byte
    ],
)
def test_damaged_text_fails_cleanly(tmp_path: Path, old: str, new: str) -> None:
    version = saved(tmp_path, classifier(Y3).booster_)
    path = version / "model.txt"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelLoadError, match="not a valid LightGBM text model"):
        loaded(version)


def test_binary_files_are_refused(tmp_path: Path) -> None:
    version = tmp_path / "m" / "1"
    version.mkdir(parents=True)
    (version / "model.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        loaded(version)
