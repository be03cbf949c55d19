"""Finding a model's configuration in its folder: ``model.yaml``, or a foreign one we import.

A Triton ``config.pbtxt`` or an MLServer ``model-settings.json`` is converted in memory so that
such repositories are served as they are.
"""

from __future__ import annotations

from pathlib import Path

from pinnace.errors import ManifestError
from pinnace.manifest.loader import load_manifest
from pinnace.manifest.schema import MANIFEST_FILE, Manifest

TRITON_CONFIG = "config.pbtxt"
MLSERVER_CONFIG = "model-settings.json"


def has_model_config(model_dir: Path) -> bool:
    """Whether ``model_dir`` holds a configuration pinnace can read."""
    return any((model_dir / name).is_file() for name in (MANIFEST_FILE, TRITON_CONFIG, MLSERVER_CONFIG))


def read_model_config(model_dir: Path) -> Manifest:
    """The manifest for ``model_dir``; ``model.yaml`` wins over imported configurations."""
    if (model_dir / MANIFEST_FILE).is_file():
        return load_manifest(model_dir / MANIFEST_FILE)
    if (model_dir / TRITON_CONFIG).is_file():
        from pinnace.manifest.triton import manifest_from_triton

        return manifest_from_triton(model_dir)
    if (model_dir / MLSERVER_CONFIG).is_file():
        from pinnace.manifest.mlserver import manifest_from_mlserver

        return manifest_from_mlserver(model_dir)
    raise ManifestError(f"{model_dir.name}: no {MANIFEST_FILE} found")
