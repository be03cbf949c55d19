"""The model manifest (``model.yaml``): schema, loading with clear errors, artifact hashes."""

from pinnace.manifest.schema import (
    MANIFEST_FILE,
    Batching,
    Manifest,
    VersionPolicy,
)
from pinnace.manifest.loader import dump_manifest, load_manifest, parse_manifest

__all__ = [
    "MANIFEST_FILE",
    "Batching",
    "Manifest",
    "VersionPolicy",
    "dump_manifest",
    "load_manifest",
    "parse_manifest",
]
