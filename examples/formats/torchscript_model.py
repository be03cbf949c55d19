"""PyTorch, saved the way PyTorch models are deployed: ``torch.jit.script(model).save(...)``.

    python examples/formats/torchscript_model.py models   # then: pinnace serve models

Builds ``torch-mlp`` (a small MLP, ``model.pt``) in REPO. TorchScript files do not record
datatypes or shapes, so the manifest states the signature; inputs are passed to ``forward``
in manifest order and outputs are named in the order ``forward`` returns them. ``build`` returns
a request and the predictions PyTorch itself makes for it.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

MANIFEST = """\
name: torch-mlp
runtime: torchscript
model_file: model.pt
inputs:
  - {name: features, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: probabilities, datatype: FP32, shape: [-1, 3]}
  - {name: logits, datatype: FP32, shape: [-1, 3]}
batching: {max_batch_size: 32, max_queue_delay_us: 200}
options: {intra_op_threads: 1}
"""


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(4, 16)
        self.out = torch.nn.Linear(16, 3)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.out(torch.relu(self.hidden(features)))
        return torch.softmax(logits, dim=1), logits


def build(repo: Path) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = Classifier().eval()
    model_dir = repo / "torch-mlp"
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "model.yaml").write_text(MANIFEST)
    with warnings.catch_warnings():
        # torch >= 2.9 marks TorchScript deprecated; it is still what serving stacks load.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(model).save(str(model_dir / "1" / "model.pt"))
    rows = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        probabilities, logits = model(torch.from_numpy(rows))
    return [
        {
            "model": "torch-mlp",
            "inputs": [("features", "FP32", rows)],
            "expected": {"probabilities": probabilities.numpy(), "logits": logits.numpy()},
            "exact": False,
        }
    ]


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    for sample in build(target):
        print(f"wrote {target / sample['model']}")
    print(
        "curl -s localhost:8000/v2/models/torch-mlp/infer -d "
        """'{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.1,0.2,0.3,0.4]}]}'"""
    )
