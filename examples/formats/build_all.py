"""Build every format's example model into one repository, skipping frameworks not installed.

    python examples/formats/build_all.py models
    pinnace serve models
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

EXAMPLES = [
    "onnx_providers_model",
    "xgboost_model",
    "lightgbm_model",
    "torchscript_model",
    "keras_model",
    "tensorflow_model",
    "openvino_model",
]


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "models")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the examples import each other
    for name in EXAMPLES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            print(f"skipped {name}: {exc.name} is not installed")
            continue
        for sample in module.build(target):
            print(f"wrote {target / sample['model']}")
    print(f"serve them with: pinnace serve {target}")


if __name__ == "__main__":
    main()
