"""Keras 3, saved the way Keras users save models: ``model.save("model.keras")``, and the
legacy HDF5 form ``model.save("model.h5")`` older projects still ship.

    python examples/formats/keras_model.py models         # then: pinnace serve models

Builds ``keras-mlp`` (``model.keras``) and ``keras-h5`` (``model.h5``) in REPO, the same small
functional model in both formats. pinnace runs Keras on the TensorFlow backend unless told
otherwise (``options.backend`` or ``KERAS_BACKEND``). ``build`` returns a request and the
predictions Keras itself makes for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# Keras fixes its backend at first import; tensorflow-cpu pulls in no GPU stack.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np

MANIFEST = """\
name: keras-mlp
runtime: keras
model_file: model.keras
inputs:
  - {name: features, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
batching: {max_batch_size: 32, max_queue_delay_us: 200}
options: {backend: tensorflow}
"""

H5_MANIFEST = MANIFEST.replace("keras-mlp", "keras-h5").replace("model.keras", "model.h5")


def build(repo: Path) -> list[dict[str, Any]]:
    keras.utils.set_random_seed(0)
    features = keras.Input(shape=(4,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(features)
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    model = keras.Model(features, probabilities)
    for name, manifest, file in (("keras-mlp", MANIFEST, "model.keras"), ("keras-h5", H5_MANIFEST, "model.h5")):
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        (repo / name / "model.yaml").write_text(manifest)
        model.save(repo / name / "1" / file)
    rows = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    expected = {"probabilities": model.predict(rows, verbose=0)}
    return [
        {"model": name, "inputs": [("features", "FP32", rows)], "expected": expected, "exact": False}
        for name in ("keras-mlp", "keras-h5")
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
    print(
        "curl -s localhost:8000/v2/models/keras-mlp/infer -d "
        """'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]}'"""
    )
