"""Artifact hashes and the trust gate, checked before any artifact is parsed."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pinnace.errors import ModelLoadError, TrustError
from pinnace.manifest.schema import Manifest
from pinnace.repository.paths import inside

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large artifacts need little memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_files(model_dir: Path, version_dir: Path) -> list[str]:
    """Every file of a version, as paths relative to the model folder ("1/model.onnx")."""
    files = []
    for path in sorted(version_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files.append(path.relative_to(model_dir).as_posix())
    return files


def verify_version(
    manifest: Manifest, model_dir: Path, version_dir: Path, *, runs_code_on_load: bool
) -> None:
    """Check hashes (and, for code-running formats, trust) for one version folder.

    Every hash the manifest lists for this version must match. A format that runs code on load
    is admitted only when the manifest says ``trusted: true`` and *every* file of the version
    has a matching hash, so nothing unlisted can slip in beside the checked artifact.
    """
    if runs_code_on_load and not manifest.trusted:
        raise TrustError(
            f"runtime {manifest.runtime!r} runs code when loading; refusing to load it because "
            "the manifest does not say 'trusted: true'"
        )
    prefix = "" if manifest.unversioned else f"{version_dir.name}/"
    listed = {rel: digest for rel, digest in manifest.artifacts.items() if rel.startswith(prefix)}
    present = artifact_files(model_dir, version_dir)
    if manifest.unversioned:
        present = [p for p in present if p in listed or not p.endswith((".yaml", ".json"))]
    for rel, expected in listed.items():
        path = model_dir / rel
        if not inside(model_dir, path) or not path.is_file():
            raise ModelLoadError(f"artifact {rel!r} listed in the manifest is missing")
        if sha256_file(path) != expected.lower():
            raise TrustError(f"sha256 of {rel!r} does not match the manifest; refusing to load it")
    if runs_code_on_load:
        unlisted = [rel for rel in present if rel not in listed]
        if unlisted or not listed:
            first = unlisted[0] if unlisted else f"{prefix}*"
            raise TrustError(
                f"trusted models need a sha256 for every artifact; {first!r} has none "
                "(run 'pinnace hash' to record them)"
            )
