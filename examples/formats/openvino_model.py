"""OpenVINO: an IR model (``model.xml`` + ``model.bin``, written by ``openvino.save_model``) and
an ONNX file compiled by OpenVINO, both on CPU.

    python examples/formats/openvino_model.py models      # then: pinnace serve models

Builds ``ov-ir`` and ``ov-onnx`` in REPO from one small ONNX graph (made with the ``onnx``
helpers, so no training framework is needed). pinnace asks OpenVINO's CPU plugin for f32
precision by default (``options.inference_precision``); the expected predictions below are
OpenVINO's own at that precision.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import openvino as ov

try:  # run as a script, or imported as examples.formats.openvino_model
    from onnx_providers_model import mlp_onnx  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from examples.formats.onnx_providers_model import mlp_onnx

IR_MANIFEST = """\
name: ov-ir
runtime: openvino
model_file: model.xml
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
batching: {max_batch_size: 32, max_queue_delay_us: 200}
options: {device: CPU, threads: 1, inference_precision: f32}
"""

ONNX_MANIFEST = """\
name: ov-onnx
runtime: openvino
model_file: model.onnx
inputs:
  - {name: x, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
"""


def build(repo: Path) -> list[dict[str, Any]]:
    for name, manifest in (("ov-ir", IR_MANIFEST), ("ov-onnx", ONNX_MANIFEST)):
        (repo / name / "1").mkdir(parents=True, exist_ok=True)
        (repo / name / "model.yaml").write_text(manifest)
    onnx_path = repo / "ov-onnx" / "1" / "model.onnx"
    onnx.save(mlp_onnx(), onnx_path)
    # Keep f32 weights: save_model compresses them to f16 unless told not to.
    ov.save_model(ov.convert_model(str(onnx_path)), str(repo / "ov-ir" / "1" / "model.xml"), compress_to_fp16=False)

    rows = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    core = ov.Core()
    samples = []
    for name, path in (("ov-ir", repo / "ov-ir" / "1" / "model.xml"), ("ov-onnx", onnx_path)):
        compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        expected = np.array(compiled({"x": rows})[compiled.outputs[0]], copy=True)
        samples.append(
            {"model": name, "inputs": [("x", "FP32", rows)], "expected": {"probabilities": expected}, "exact": False}
        )
    return samples


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
    print(
        "curl -s localhost:8000/v2/models/ov-ir/infer -d "
        """'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]}'"""
    )
