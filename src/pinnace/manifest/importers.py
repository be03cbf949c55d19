"""``pinnace init --from triton|mlserver``: convert a whole Triton or MLServer repository into
pinnace model packages (``model.yaml`` + numbered version folders).

Each model is converted exactly as ``pinnace serve`` converts it on the fly
(:mod:`.triton`, :mod:`.mlserver`), then written with the sha256 of every artifact, and with
``trusted: true`` only when the user says ``--trusted``. What could not be carried over is
logged and written at the top of the new ``model.yaml`` as comments, so the review that
trust needs starts from a list.

Into another repository, artifacts are copied: Triton version folders as they are, an
MLServer model's artifact into ``1/`` (a normal versioned package). Into the *same*
repository (``--repo`` equal to the source), ``model.yaml`` is written beside the foreign
configuration, which it then overrides, and nothing is copied.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import Final

import msgspec

from pinnace.errors import ManifestError
from pinnace.manifest.loader import dump_manifest
from pinnace.manifest.mlserver import SETTINGS_FILE, convert_mlserver
from pinnace.manifest.schema import MANIFEST_FILE, MODEL_NAME_RE, Manifest
from pinnace.manifest.triton import CONFIG_FILE, Conversion, convert_triton

log = logging.getLogger(__name__)

KINDS: Final = ("triton", "mlserver")
_CODE_RUNTIMES: Final = ("sklearn", "python")


def import_repository(source: Path, kind: str, dest: Path, *, trusted: bool = False) -> list[Path]:
    """Convert every model of the ``kind`` repository at ``source`` into ``dest``.

    Returns the ``model.yaml`` paths written. Raises :class:`ManifestError` naming the model and
    the key when a model cannot be converted; nothing is written for any model in that case.
    """
    if kind not in KINDS:
        raise ManifestError(f"cannot import {kind!r} repositories; choose one of {', '.join(KINDS)}")
    if not source.is_dir():
        raise ManifestError(f"{source.name!r} is not a folder")
    in_place = dest.resolve() == source.resolve()
    plans = _plan_triton(source) if kind == "triton" else _plan_mlserver(source, trusted=trusted)
    if not plans:
        config = CONFIG_FILE if kind == "triton" else SETTINGS_FILE
        raise ManifestError(f"no {config} found under {source.name!r}")
    if not in_place:
        for name, _, _ in plans:
            if (dest / name).exists():
                raise ManifestError(f"{name!r} already exists in the destination repository; remove it first")
    written = []
    for name, model_dir, conversion in plans:
        manifest = conversion.manifest
        for warning in conversion.warnings:
            log.warning("%s: %s", name, warning)
        target = model_dir if in_place else dest / name
        if not in_place:
            manifest = _copy_artifacts(model_dir, target, manifest, kind)
        if manifest.runtime in _CODE_RUNTIMES and not trusted:
            log.warning(
                "%s: %s artifacts run code when loaded; review them, then set 'trusted: true' "
                "(or import again with --trusted)", name, manifest.runtime,
            )
        manifest = msgspec.structs.replace(manifest, trusted=trusted)
        written.append(_write(target, _with_hashes(manifest, target), kind, conversion.warnings))
    return written


def _plan_triton(source: Path) -> list[tuple[str, Path, Conversion]]:
    plans = []
    for model_dir in sorted(p for p in source.iterdir() if (p / CONFIG_FILE).is_file()):
        _check_name(model_dir.name)
        plans.append((model_dir.name, model_dir, convert_triton(model_dir)))
    return plans


def _plan_mlserver(source: Path, *, trusted: bool) -> list[tuple[str, Path, Conversion]]:
    # MLServer finds model-settings.json anywhere below its repository root.
    plans: dict[str, tuple[str, Path, Conversion]] = {}
    for settings in sorted(source.rglob(SETTINGS_FILE)):
        model_dir = settings.parent
        name = _mlserver_name(model_dir)
        _check_name(name)
        if name in plans:
            raise ManifestError(
                f"two MLServer models are named {name!r}; pinnace imports one version per name "
                "(rename one, or arrange them as numbered versions by hand)"
            )
        plans[name] = (name, model_dir, convert_mlserver(model_dir, trusted=trusted, name=name))
    return list(plans.values())


def _mlserver_name(model_dir: Path) -> str:
    import json

    try:
        declared = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8")).get("name")
    except (OSError, ValueError, AttributeError):
        declared = None
    return str(declared) if declared else model_dir.name


def _check_name(name: str) -> None:
    if not MODEL_NAME_RE.match(name):
        raise ManifestError(f"model name {name!r} is not usable: names match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$")


def _copy_artifacts(model_dir: Path, target: Path, manifest: Manifest, kind: str) -> Manifest:
    if kind == "triton":
        target.mkdir(parents=True)
        for version in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            shutil.copytree(version, target / version.name, symlinks=False)
        return manifest
    # MLServer: the one artifact moves into version folder 1; the package becomes versioned.
    source_file = model_dir / manifest.model_file
    version_dir = target / "1"
    version_dir.mkdir(parents=True)
    destination = version_dir / manifest.model_file
    destination.parent.mkdir(parents=True, exist_ok=True)
    if source_file.is_dir():
        shutil.copytree(source_file, destination, symlinks=False)
    else:
        shutil.copy2(source_file, destination)
    return msgspec.structs.replace(manifest, unversioned=False)


def _with_hashes(manifest: Manifest, model_dir: Path) -> Manifest:
    """The manifest with the sha256 of every artifact, keyed as the repository checks them."""
    if manifest.unversioned:
        folders = [model_dir]
    else:
        folders = sorted((p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    hashes: dict[str, str] = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(model_dir).as_posix()
            if manifest.unversioned and rel in (MANIFEST_FILE, SETTINGS_FILE, CONFIG_FILE):
                continue
            hashes[rel] = _sha256(path)
    return msgspec.structs.replace(manifest, artifacts=hashes)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _write(model_dir: Path, manifest: Manifest, kind: str, warnings: list[str]) -> Path:
    origin = CONFIG_FILE if kind == "triton" else SETTINGS_FILE
    lines = [f"# Imported from {origin} by 'pinnace init --from {kind}'."]
    if warnings:
        lines.append("# Review before serving — what the import could not carry over or changed:")
        lines.extend(f"#   - {w}" for w in warnings)
    path = model_dir / MANIFEST_FILE
    path.write_text("\n".join(lines) + "\n" + dump_manifest(manifest))
    return path
