"""LightGBM, saved the way LightGBM users save models: ``booster_.save_model`` to text.

    python examples/formats/lightgbm_model.py models      # then: pinnace serve models

Builds ``lgbm-iris`` (a multiclass classifier, ``model.txt``) in REPO. ``build`` returns a
request and the predictions LightGBM itself makes for it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightgbm as lgb
from sklearn.datasets import load_iris

MANIFEST = """\
name: lgbm-iris
runtime: lightgbm
model_file: model.txt
inputs:
  - {name: input, datatype: FP64, shape: [-1, 4], allow_nan: true}
outputs:
  - {name: predict, datatype: INT64, shape: [-1]}
  - {name: predict_proba, datatype: FP64, shape: [-1, 3]}
batching: {max_batch_size: 64, max_queue_delay_us: 200}
options: {threads: 1}
"""


def build(repo: Path) -> list[dict[str, Any]]:
    x, y = load_iris(return_X_y=True)
    classifier = lgb.LGBMClassifier(n_estimators=8, num_leaves=7, n_jobs=1, verbose=-1, random_state=0)
    classifier.fit(x, y)
    model_dir = repo / "lgbm-iris"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "model.yaml").write_text(MANIFEST)
    classifier.booster_.save_model(model_dir / "1" / "model.txt")
    rows = x[::15]
    return [
        {
            "model": "lgbm-iris",
            "inputs": [("input", "FP64", rows)],
            "expected": {"predict": classifier.predict(rows), "predict_proba": classifier.predict_proba(rows)},
            "exact": True,
        }
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
    print(
        "curl -s localhost:8000/v2/models/lgbm-iris/infer -d "
        """'{"inputs":[{"name":"input","datatype":"FP64","shape":[1,4],"data":[5.1,3.5,1.4,0.2]}]}'"""
    )
