"""XGBoost, saved the way XGBoost users save models: ``save_model`` to JSON or UBJSON.

    python examples/formats/xgboost_model.py models      # then: pinnace serve models

Builds two models in REPO: ``xgb-iris`` (a classifier, ``model.json``) and ``xgb-regressor``
(a regressor, ``model.ubj``). ``build`` returns, per model, a request and the predictions
XGBoost itself makes for it (the e2e tests compare the server's answers with them).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from sklearn.datasets import load_diabetes, load_iris

CLASSIFIER_MANIFEST = """\
name: xgb-iris
runtime: xgboost
model_file: model.json
inputs:
  - {name: input, datatype: FP32, shape: [-1, 4], allow_nan: true}
outputs:
  - {name: predict, datatype: INT64, shape: [-1]}
  - {name: predict_proba, datatype: FP32, shape: [-1, 3]}
batching: {max_batch_size: 64, max_queue_delay_us: 200}
options: {threads: 1}
"""

REGRESSOR_MANIFEST = """\
name: xgb-regressor
runtime: xgboost
model_file: model.ubj
inputs:
  - {name: input, datatype: FP32, shape: [-1, 10], allow_nan: true}
outputs:
  - {name: predict, datatype: FP32, shape: [-1]}
"""


def build(repo: Path) -> list[dict[str, Any]]:
    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    classifier = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1, random_state=0).fit(x, y)
    _write(repo / "xgb-iris", CLASSIFIER_MANIFEST, lambda d: classifier.save_model(d / "model.json"))

    xr, yr = load_diabetes(return_X_y=True)
    xr = xr.astype(np.float32)
    regressor = xgb.XGBRegressor(n_estimators=8, max_depth=3, n_jobs=1, random_state=0).fit(xr, yr)
    _write(repo / "xgb-regressor", REGRESSOR_MANIFEST, lambda d: regressor.save_model(d / "model.ubj"))

    rows, rows_r = x[::15], xr[:7]
    return [
        {
            "model": "xgb-iris",
            "inputs": [("input", "FP32", rows)],
            "expected": {"predict": classifier.predict(rows), "predict_proba": classifier.predict_proba(rows)},
            "exact": True,
        },
        {
            "model": "xgb-regressor",
            "inputs": [("input", "FP32", rows_r)],
            "expected": {"predict": regressor.predict(rows_r)},
            "exact": True,
        },
    ]


def _write(model_dir: Path, manifest: str, save: Any) -> None:
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "model.yaml").write_text(manifest)
    save(model_dir / "1")


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
    print(
        "curl -s localhost:8000/v2/models/xgb-iris/infer -d "
        """'{"inputs":[{"name":"input","datatype":"FP32","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}'"""
    )
