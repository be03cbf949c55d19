"""``pinnace init`` (make a model package from an artifact, or import a Triton/MLServer
repository) and ``pinnace hash`` (record artifact hashes in model.yaml)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import msgspec

from pinnace.errors import PinnaceError
from pinnace.manifest import MANIFEST_FILE, Batching, Manifest, dump_manifest, load_manifest
from pinnace.manifest.schema import MODEL_NAME_RE
from pinnace.repository.integrity import artifact_files, sha256_file
from pinnace.runtimes.registry import available_runtimes, guess_runtime, runtime_class


@click.command("init")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="Model name (also its folder); defaults to the file's stem.")
@click.option("--repo", "repo", type=click.Path(file_okay=False, path_type=Path), default=Path("models"),
              show_default=True, help="Repository to write the model package into.")
@click.option("--runtime", type=click.Choice(available_runtimes()), help="Format; guessed from the file name.")
@click.option("--version", "version", default=1, show_default=True, help="Version folder to create.")
@click.option("--trusted", is_flag=True, help="Mark the model trusted (needed for pickle, joblib, Python).")
@click.option("--description", default="", help="What the model does.")
@click.option("--author", default="", help="Who made it.")
@click.option("--license", "license_", default="", help="Licence of the model.")
@click.option("--max-batch-size", default=0, show_default=True, help="Adaptive batching: 0 turns it off.")
@click.option("--from", "from_", type=click.Choice(["triton", "mlserver"]),
              help="SOURCE is a Triton or MLServer repository to convert into --repo.")
@click.option("--force", is_flag=True, help="Overwrite an existing model.yaml or version folder.")
def init_command(
    source: Path,
    name: str | None,
    repo: Path,
    runtime: str | None,
    version: int,
    trusted: bool,
    description: str,
    author: str,
    license_: str,
    max_batch_size: int,
    from_: str | None,
    force: bool,
) -> None:
    """Create REPO/NAME/model.yaml and REPO/NAME/VERSION/ from the artifact SOURCE.

    The signature is read from the artifact where its format declares one, and the sha256 of
    every artifact is recorded.
    """
    try:
        if from_ is not None:
            from pinnace.manifest.importers import import_repository

            for written in import_repository(source, from_, repo, trusted=trusted):
                click.echo(f"wrote {written}")
            return
        written = create_package(
            source,
            repo=repo,
            name=name or source.stem,
            runtime=runtime or guess_runtime(source),
            version=version,
            trusted=trusted,
            description=description,
            author=author,
            license_=license_,
            max_batch_size=max_batch_size,
            force=force,
        )
    except PinnaceError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"wrote {written}")


def create_package(
    source: Path,
    *,
    repo: Path,
    name: str,
    runtime: str | None,
    version: int = 1,
    trusted: bool = False,
    description: str = "",
    author: str = "",
    license_: str = "",
    max_batch_size: int = 0,
    force: bool = False,
) -> Path:
    """Copy ``source`` into ``repo/name/version/`` and write its manifest; returns its path."""
    if not MODEL_NAME_RE.match(name):
        raise click.BadParameter("must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", param_hint="--name")
    if runtime is None:
        raise click.BadParameter(f"cannot tell the format of {source.name!r}", param_hint="--runtime")
    if version < 1:
        raise click.BadParameter("versions are positive integers", param_hint="--version")
    cls = runtime_class(runtime)
    if cls.runs_code_on_load and not trusted:
        raise click.UsageError(
            f"{runtime} artifacts run code when loaded; pass --trusted if you trust {source.name!r}"
        )
    model_dir = repo / name
    version_dir = model_dir / str(version)
    manifest_path = model_dir / MANIFEST_FILE
    if (version_dir.exists() or manifest_path.exists()) and not force:
        raise click.UsageError(f"{model_dir} already holds version {version} or a manifest; use --force")
    version_dir.mkdir(parents=True, exist_ok=True)
    # Files keep their name (the suffix tells .h5 from .keras, .onnx from .xml for OpenVINO);
    # folders (SavedModel) take the runtime's default name.
    target = version_dir / (cls.default_model_file if source.is_dir() else source.name)
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
        for companion in _companions(source):
            shutil.copy2(companion, version_dir / companion.name)
    signature = cls.inspect(target)
    inputs, outputs = signature if signature is not None else ([], [])
    if max_batch_size > 0:
        inputs = [msgspec.structs.replace(t, shape=[-1, *t.shape[1:]]) for t in inputs]
        outputs = [msgspec.structs.replace(t, shape=[-1, *t.shape[1:]]) for t in outputs]
    manifest = Manifest(
        name=name,
        runtime=runtime,
        description=description,
        author=author,
        license=license_,
        model_file="" if target.name == cls.default_model_file else target.name,
        trusted=trusted,
        inputs=inputs,
        outputs=outputs,
        batching=Batching(max_batch_size=max_batch_size),
    )
    manifest = with_hashes(manifest, model_dir)
    manifest_path.write_text(dump_manifest(manifest))
    return manifest_path


def _companions(source: Path) -> list[Path]:
    """Files an artifact cannot load without: an OpenVINO IR's weights beside its .xml."""
    weights = source.with_suffix(".bin")
    return [weights] if source.suffix == ".xml" and weights.is_file() else []


def with_hashes(manifest: Manifest, model_dir: Path) -> Manifest:
    """``manifest`` with the sha256 of every file in every numbered version folder."""
    hashes: dict[str, str] = {}
    folders = [model_dir] if manifest.unversioned else sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    for folder in folders:
        for rel in artifact_files(model_dir, folder):
            if manifest.unversioned and rel in (MANIFEST_FILE, "model-settings.json"):
                continue
            hashes[rel] = sha256_file(model_dir / rel)
    return msgspec.structs.replace(manifest, artifacts=hashes)


@click.command("hash")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def hash_command(model_dir: Path) -> None:
    """Record the sha256 of every artifact of MODEL_DIR in its model.yaml."""
    path = model_dir / MANIFEST_FILE
    try:
        manifest = with_hashes(load_manifest(path), model_dir)
    except PinnaceError as exc:
        raise click.ClickException(exc.message) from None
    path.write_text(dump_manifest(manifest))
    for rel, digest in manifest.artifacts.items():
        click.echo(f"{digest}  {rel}")
