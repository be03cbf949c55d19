"""Building model packages for tests: custom Python models with their manifests and hashes."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from pinnace.cli.init import with_hashes
from pinnace.manifest import dump_manifest, parse_manifest


def write_python_model(
    repo: Path,
    name: str,
    code: str,
    *,
    inputs: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    version: int = 1,
    **manifest: Any,
) -> Path:
    """A ``python`` runtime model: ``code`` is the body of model.py (defines class Model)."""
    model_dir = repo / name
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text(textwrap.dedent(code))
    doc = {"name": name, "runtime": "python", "trusted": True, "inputs": inputs, "outputs": outputs}
    doc.update(manifest)
    parsed = parse_manifest(yaml.safe_dump(doc))
    path = model_dir / "model.yaml"
    path.write_text(dump_manifest(with_hashes(parsed, model_dir)))
    return path


ADD_MUL = """
    import numpy as np

    class Model:
        def predict(self, inputs):
            a, b = inputs["a"], inputs["b"]
            return {"sum": a + b, "product": a * b}
"""
"""Two inputs, two outputs: the "several inputs and outputs" model."""

ADD_MUL_SIGNATURE: dict[str, Any] = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "b", "datatype": "FP32", "shape": [-1, 3]},
    ],
    "outputs": [
        {"name": "sum", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "product", "datatype": "FP32", "shape": [-1, 3]},
    ],
}
