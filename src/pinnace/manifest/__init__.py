"""The model manifest (``model.yaml``): schema, loading with clear errors, artifact hashes."""

from pinnace.manifest.loader import dump_manifest, load_manifest, parse_manifest
from pinnace.manifest.schema import (
    MANIFEST_FILE,
    Batching,
    Manifest,
    VersionPolicy,
)

__all__ = [
    "MANIFEST_FILE",
    "Batching",
    "Manifest",
    "VersionPolicy",
    "dump_manifest",
    "load_manifest",
    "parse_manifest",
]
