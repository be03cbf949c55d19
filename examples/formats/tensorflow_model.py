"""TensorFlow SavedModel, saved the way TF Serving and Triton expect it:
``tf.saved_model.save(module, ".../1/model.savedmodel", signatures=...)``.

    python examples/formats/tensorflow_model.py models    # then: pinnace serve models

Builds ``tf-linear`` in REPO: a linear classifier whose ``serving_default`` signature takes
``x`` and returns ``scores`` and ``label``. pinnace checks the manifest against that signature
when it loads the model. ``build`` returns a request and the predictions TensorFlow itself
makes for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

MANIFEST = """\
name: tf-linear
runtime: tensorflow
model_file: model.savedmodel
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: label, datatype: INT64, shape: [-1]}
  - {name: scores, datatype: FP32, shape: [-1, 3]}
batching: {max_batch_size: 32, max_queue_delay_us: 200}
options: {signature: serving_default}
"""


class LinearClassifier(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.weights = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))
        self.bias = tf.Variable(rng.standard_normal(3).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.matmul(x, self.weights) + self.bias
        return {"scores": tf.nn.softmax(logits), "label": tf.argmax(logits, axis=1)}


def build(repo: Path) -> list[dict[str, Any]]:
    module = LinearClassifier()
    model_dir = repo / "tf-linear"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "model.yaml").write_text(MANIFEST)
    tf.saved_model.save(module, str(model_dir / "1" / "model.savedmodel"), signatures={"serving_default": module.serve})
    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    result = module.serve(tf.constant(rows))
    return [
        {
            "model": "tf-linear",
            "inputs": [("x", "FP32", rows)],
            "expected": {"label": result["label"].numpy(), "scores": result["scores"].numpy()},
            "exact": False,
        }
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
    print(
        "curl -s localhost:8000/v2/models/tf-linear/infer -d "
        """'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]}'"""
    )
