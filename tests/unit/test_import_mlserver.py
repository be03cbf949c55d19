"""MLServer model-settings.json → manifest, served unchanged where that is safe, and
`pinnace init --from mlserver` (import_repository)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pinnace.errors import ManifestError
from pinnace.manifest import load_manifest
from pinnace.manifest.discover import read_model_config
from pinnace.manifest.importers import import_repository
from pinnace.manifest.mlserver import convert_mlserver

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

rng = np.random.default_rng(0)
X = rng.standard_normal((90, 4))
Y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.4).astype(int)


def mlserver_model(root: Path, folder: str, settings: dict[str, Any], files: dict[str, Any]) -> Path:
    model_dir = root / folder
    model_dir.mkdir(parents=True)
    (model_dir / "model-settings.json").write_text(json.dumps(settings))
    for name, save in files.items():
        save(model_dir / name)
    return model_dir


def xgb_classifier(path: Path) -> None:
    xgb.XGBClassifier(n_estimators=3, max_depth=2, n_jobs=1).fit(X.astype(np.float32), Y).save_model(path)


def lgb_classifier(path: Path) -> None:
    lgb.LGBMClassifier(n_estimators=3, num_leaves=4, verbose=-1, n_jobs=1).fit(X, Y).booster_.save_model(path)


def test_xgboost_settings_without_signature(tmp_path: Path) -> None:
    model_dir = mlserver_model(
        tmp_path, "iris-xgb",
        {"name": "iris-xgb", "implementation": "mlserver_xgboost.XGBoostModel",
         "parameters": {"uri": "./model.json", "version": "v0.1.0"}},
        {"model.json": xgb_classifier},
    )
    conversion = convert_mlserver(model_dir, trusted=False)
    m = conversion.manifest
    assert (m.runtime, m.model_file, m.unversioned) == ("xgboost", "model.json", True)
    assert m.inputs == []  # any single input, as MLServer accepts
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [
        ("predict", "INT64", [-1]), ("predict_proba", "FP32", [-1, 3])
    ]
    assert any("'v0.1.0' is served as version 1" in w for w in conversion.warnings)
    assert any("no inputs declared" in w for w in conversion.warnings)


def test_lightgbm_predict_is_the_boosters_own_output(tmp_path: Path) -> None:
    model_dir = mlserver_model(
        tmp_path, "lgb",
        {"implementation": "mlserver_lightgbm.LightGBMModel"},  # no uri: MLServer looks for model.bst
        {"model.bst": lgb_classifier},
    )
    m = read_model_config(model_dir)
    assert m.model_file == "model.bst"
    assert [(t.name, t.datatype, t.shape) for t in m.outputs] == [("predict", "FP64", [-1, 3])]
    assert m.options == {"output_roles": {"predict": "raw"}}


def test_declared_signature_and_adaptive_batching(tmp_path: Path) -> None:
    settings = {
        "name": "reg", "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "model.ubj"},
        "max_batch_size": 8, "max_batch_time": 0.002,
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4]}],
        "outputs": [{"name": "predict", "datatype": "FP32", "shape": [1]}],
    }

    def regressor(path: Path) -> None:
        xgb.XGBRegressor(n_estimators=2, n_jobs=1).fit(X.astype(np.float32), X[:, 0]).save_model(path)

    m = convert_mlserver(mlserver_model(tmp_path, "reg", settings, {"model.ubj": regressor}), trusted=False).manifest
    assert (m.batching.max_batch_size, m.batching.max_queue_delay_us) == (8, 2000)
    assert [(t.name, t.shape) for t in m.inputs] == [("features", [-1, 4])]
    assert [(t.name, t.shape) for t in m.outputs] == [("predict", [-1])]


def test_unchanged_sklearn_models_are_refused_with_the_way_out(tmp_path: Path) -> None:
    model_dir = mlserver_model(
        tmp_path, "sk", {"implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "model.joblib"}},
        {"model.joblib": lambda p: p.write_bytes(b"not read")},
    )
    with pytest.raises(ManifestError, match=r"pinnace init --from mlserver SRC --repo DEST --trusted"):
        read_model_config(model_dir)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"implementation": "models.MyCustomModel"}, "implementation"),
        ({"implementation": "mlserver_xgboost.XGBoostModel", "parameters": {"uri": "../elsewhere/model.json"}},
         "parameters.uri"),
        ({"implementation": "mlserver_xgboost.XGBoostModel", "parameters": {"uri": "/abs/model.json"}},
         "parameters.uri"),
        ({"implementation": "mlserver_xgboost.XGBoostModel",
          "parameters": {"uri": "model.json", "environment_tarball": "env.tar.gz"}}, "parameters.environment_tarball"),
        ({"implementation": "mlserver_xgboost.XGBoostModel", "colour": "red"}, "colour"),
    ],
)
def test_refused_settings_name_their_key(tmp_path: Path, settings: dict[str, Any], key: str) -> None:
    model_dir = mlserver_model(tmp_path, "m", settings, {"model.json": xgb_classifier})
    with pytest.raises(ManifestError, match=f"'{key}' is not supported"):
        convert_mlserver(model_dir, trusted=False)


def test_import_makes_versioned_hashed_packages(tmp_path: Path) -> None:
    source = tmp_path / "mlserver"
    mlserver_model(source, "nested/xgb", {"name": "iris-xgb", "implementation": "mlserver_xgboost.XGBoostModel",
                                          "parameters": {"uri": "model.json"}}, {"model.json": xgb_classifier})
    mlserver_model(source, "lgb", {"implementation": "mlserver_lightgbm.LightGBMModel"}, {"model.bst": lgb_classifier})
    written = import_repository(source, "mlserver", tmp_path / "models")
    assert sorted(p.parent.name for p in written) == ["iris-xgb", "lgb"]
    xgb_manifest = load_manifest(tmp_path / "models" / "iris-xgb" / "model.yaml")
    assert not xgb_manifest.unversioned and list(xgb_manifest.artifacts) == ["1/model.json"]
    assert (tmp_path / "models" / "iris-xgb" / "1" / "model.json").is_file()


def test_trusted_sklearn_import_reads_its_signature(tmp_path: Path) -> None:
    joblib = pytest.importorskip("joblib")
    linear = pytest.importorskip("sklearn.linear_model")
    estimator = linear.LogisticRegression(max_iter=200).fit(X, Y)
    source = tmp_path / "mlserver"
    mlserver_model(source, "sk", {"name": "sk", "implementation": "mlserver_sklearn.SKLearnModel",
                                  "parameters": {"uri": "./model.joblib"}},
                   {"model.joblib": lambda p: joblib.dump(estimator, p)})
    (written,) = import_repository(source, "mlserver", tmp_path / "models", trusted=True)
    manifest = load_manifest(written)
    assert manifest.trusted and list(manifest.artifacts) == ["1/model.joblib"]
    assert [o.name for o in manifest.outputs] == ["predict", "predict_proba"]


def test_untrusted_sklearn_import_is_written_but_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "mlserver"
    mlserver_model(source, "sk", {"implementation": "mlserver_sklearn.SKLearnModel"},
                   {"model.joblib": lambda p: p.write_bytes(b"never unpickled")})
    (written,) = import_repository(source, "mlserver", tmp_path / "models")
    assert not load_manifest(written).trusted
    assert "review them, then set 'trusted: true'" in caplog.text


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "mlserver"
    for folder in ("a", "b"):
        mlserver_model(source, folder, {"name": "same", "implementation": "mlserver_xgboost.XGBoostModel"},
                       {"model.json": xgb_classifier})
    with pytest.raises(ManifestError, match="two MLServer models are named 'same'"):
        import_repository(source, "mlserver", tmp_path / "models")


def test_import_in_place_keeps_the_mlserver_layout(tmp_path: Path) -> None:
    source = tmp_path / "mlserver"
    mlserver_model(source, "xgb", {"implementation": "mlserver_xgboost.XGBoostModel",
                                   "parameters": {"uri": "model.json"}}, {"model.json": xgb_classifier})
    (written,) = import_repository(source, "mlserver", source)
    manifest = read_model_config(source / "xgb")
    assert manifest.unversioned and list(manifest.artifacts) == ["model.json"]
    assert written == source / "xgb" / "model.yaml"
