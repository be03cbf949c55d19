"""A TensorFlow module for the SavedModel tests (tf.function needs its source in a file)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class Linear(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(0)
        self.weights = tf.Variable(rng.standard_normal((4, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"), tf.TensorSpec([None], tf.string, name="tag")])
    def serve(self, x: tf.Tensor, tag: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.matmul(x, self.weights)
        return {"scores": tf.nn.softmax(logits), "label": tf.argmax(logits, axis=1), "echo": tf.strings.upper(tag)}
