"""ONNX Runtime with execution-provider selection: TensorRT, then CUDA, then CPU — whichever
this machine and onnxruntime build have; the metadata says which one runs.

    python examples/formats/onnx_providers_model.py models   # then: pinnace serve models
    curl -s localhost:8000/v2/models/onnx-providers          # parameters.execution_providers

Builds ``onnx-providers`` in REPO from a small ONNX graph. On a CPU-only machine the metadata
reads ``execution_providers: CPUExecutionProvider`` with a note that TensorRT and CUDA are not
in the onnxruntime build.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MANIFEST = """\
name: onnx-providers
runtime: onnx
model_file: model.onnx
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
batching: {max_batch_size: 32, max_queue_delay_us: 200}
options:
  providers: [tensorrt, {cuda: {device_id: 0}}, cpu]
  intra_op_threads: 1
"""


def mlp_onnx(seed: int = 0) -> onnx.ModelProto:
    """A 4 → 8 → 3 MLP with a softmax, as an ONNX graph with a free batch dimension."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((4, 8)).astype(np.float32),
        "b1": rng.standard_normal(8).astype(np.float32),
        "w2": rng.standard_normal((8, 3)).astype(np.float32),
        "b2": rng.standard_normal(3).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime and OpenVINO release in use
    onnx.checker.check_model(model)
    return model


def build(repo: Path) -> list[dict[str, Any]]:
    model_dir = repo / "onnx-providers"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "model.yaml").write_text(MANIFEST)
    onnx.save(mlp_onnx(seed=2), model_dir / "1" / "model.onnx")
    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["probabilities"], {"x": rows})
    return [
        {"model": "onnx-providers", "inputs": [("x", "FP32", rows)], "expected": {"probabilities": expected},
         "exact": False}
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
