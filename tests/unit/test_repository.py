from __future__ import annotations

import asyncio
import itertools
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pinnace.cli.init import with_hashes
from pinnace.core.dataplane import scheduler_factory
from pinnace.errors import (
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    TrustError,
)
from pinnace.manifest import dump_manifest, load_manifest
from pinnace.repository import ModelRepository, ModelState


def repository(root: Path) -> ModelRepository:
    return ModelRepository(root, scheduler_factory(), drain_grace_s=5)


class _CreatesFile:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def write_evil_model(repo: Path, marker: Path, *, trusted: bool, hashed: bool) -> None:
    model_dir = repo / "evil"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.joblib").write_bytes(pickle.dumps(_CreatesFile(marker)))
    doc = {"name": "evil", "runtime": "sklearn", "trusted": trusted, "warmup": False}
    (model_dir / "model.yaml").write_text(yaml.safe_dump(doc))
    if hashed:
        manifest = with_hashes(load_manifest(model_dir / "model.yaml"), model_dir)
        (model_dir / "model.yaml").write_text(dump_manifest(manifest))


@pytest.mark.parametrize(
    ("trusted", "hashed", "message"),
    [(False, True, "trusted: true"), (False, False, "trusted: true"), (True, False, "sha256 for every artifact")],
)
async def test_untrusted_pickle_is_never_unpickled(
    tmp_path: Path, trusted: bool, hashed: bool, message: str
) -> None:
    marker = tmp_path / "pwned"
    write_evil_model(tmp_path / "repo", marker, trusted=trusted, hashed=hashed)
    repo = repository(tmp_path / "repo")
    with pytest.raises(TrustError, match=message):
        await repo.load("evil")
    assert not marker.exists()
    assert repo.state_of("evil")[0] is ModelState.UNAVAILABLE
    with pytest.raises(ModelNotReadyError, match="trusted"):
        repo.get("evil")


async def test_tampered_trusted_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write_evil_model(tmp_path / "repo", marker, trusted=True, hashed=True)
    artifact = tmp_path / "repo" / "evil" / "1" / "model.joblib"
    artifact.write_bytes(artifact.read_bytes() + b"\x00")
    with pytest.raises(TrustError, match="does not match"):
        await repository(tmp_path / "repo").load("evil")
    assert not marker.exists()


async def test_extra_unhashed_file_beside_trusted_artifact_is_refused(example_repo: Path) -> None:
    (example_repo / "iris-sklearn" / "1" / "sneaky.py").write_text("print('hi')\n")
    with pytest.raises(TrustError, match=r"sneaky\.py"):
        await repository(example_repo).load("iris-sklearn")


async def test_hash_mismatch_on_onnx(example_repo: Path) -> None:
    artifact = example_repo / "iris" / "1" / "model.onnx"
    artifact.write_bytes(artifact.read_bytes()[:-10])
    with pytest.raises(TrustError, match="sha256"):
        await repository(example_repo).load("iris")


async def test_failed_model_does_not_stop_the_others(example_repo: Path) -> None:
    shutil.copytree(example_repo / "iris", example_repo / "broken")
    manifest = (example_repo / "broken" / "model.yaml").read_text().replace("name: iris", "name: broken")
    (example_repo / "broken" / "model.yaml").write_text(manifest)
    (example_repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    broken = with_hashes(load_manifest(example_repo / "broken" / "model.yaml"), example_repo / "broken")
    (example_repo / "broken" / "model.yaml").write_text(dump_manifest(broken))
    repo = repository(example_repo)
    await repo.load_all()
    state, reason = repo.state_of("broken")
    assert state is ModelState.UNAVAILABLE
    assert "onnxruntime could not load" in reason
    assert str(example_repo) not in reason  # no paths leak
    assert repo.get("iris").state is ModelState.READY
    assert not repo.ready()  # strict readiness: one model is down
    rows = {(r.name, r.state) for r in repo.index()}
    assert ("broken", "UNAVAILABLE") in rows and ("iris", "READY") in rows
    await repo.unload_all()


async def test_version_policy(example_repo: Path) -> None:
    model = example_repo / "iris"
    for number in (2, 3):
        shutil.copytree(model / "1", model / str(number))
    manifest = load_manifest(model / "model.yaml")
    text = dump_manifest(with_hashes(manifest, model)) + "version_policy: {latest: 2}\n"
    (model / "model.yaml").write_text(text)
    repo = repository(example_repo)
    await repo.load("iris")
    assert repo.get("iris").version == 3
    assert repo.get("iris", "2").version == 2
    with pytest.raises(ModelNotFoundError, match="no version '1'"):
        repo.get("iris", "1")
    (model / "model.yaml").write_text(text.replace("{latest: 2}", "{specific: [1, 7]}"))
    await repo.load("iris")
    assert repo.get("iris").version == 1
    with pytest.raises(ModelNotReadyError, match="version folder not found"):
        repo.get("iris", "7")
    await repo.unload_all()


async def test_failed_reload_keeps_the_old_version_serving(example_repo: Path) -> None:
    repo = repository(example_repo)
    await repo.load("iris")
    first = repo.get("iris")
    (example_repo / "iris" / "model.yaml").write_text("name: iris\nruntime: onnx\nbogus: 1\n")
    with pytest.raises(Exception, match="bogus"):
        await repo.load("iris")
    assert repo.get("iris") is first
    assert repo.state_of("iris")[0] is ModelState.READY
    assert "reload failed" in repo.state_of("iris")[1]
    await repo.unload_all()


async def test_reload_swaps_in_new_versions_and_unload_refuses(example_repo: Path) -> None:
    repo = repository(example_repo)
    await repo.load("iris")
    first = repo.get("iris")
    await repo.load("iris")
    assert repo.get("iris") is not first
    assert first.state is ModelState.UNAVAILABLE  # drained and unloaded
    await repo.unload("iris")
    with pytest.raises(ModelNotReadyError, match="unloaded"):
        repo.get("iris")


@pytest.mark.parametrize("name", ["..", "../iris", "a/b", "iris\x00", ".hidden", "x" * 80, ""])
async def test_names_that_could_escape_are_unknown(example_repo: Path, name: str) -> None:
    repo = repository(example_repo)
    with pytest.raises(ModelNotFoundError):
        repo.get(name)
    with pytest.raises(ModelNotFoundError):
        await repo.load(name)


async def test_warmup_failure_marks_unavailable(example_repo: Path) -> None:
    path = example_repo / "iris" / "model.yaml"
    path.write_text(path.read_text().replace("shape: [-1, 4]", "shape: [-1, 5]"))
    with pytest.raises(ModelLoadError, match="warmup failed"):
        await repository(example_repo).load("iris")


def test_loaded_model_predicts_like_onnxruntime(example_repo: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(example_repo / "iris" / "1" / "model.onnx"))
    x = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    assert session.run(["label"], {"input": x})[0].tolist() == [0]
    assert (example_repo / "iris" / "model.yaml").exists()


TIMED_LOAD = """
    import time
    from pathlib import Path

    class Model:
        def __init__(self):
            start = time.monotonic()
            time.sleep(0.2)
            with open(Path(__file__).parents[2] / "loads.txt", "a") as log:
                log.write(f"{start} {time.monotonic()}\\n")

        def predict(self, inputs):
            return {"y": inputs["x"]}
"""
"""A model whose load takes 0.2 s and writes when it ran to REPO/loads.txt."""


def _load_times(root: Path) -> list[tuple[float, float]]:
    lines = (root / "loads.txt").read_text().split("\n")
    return sorted((float(a), float(b)) for a, b in (line.split() for line in lines if line))


async def test_a_runtimes_first_loads_take_turns_and_later_ones_run_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loading a framework for the first time (its import, its native libraries) never
    overlaps another first load; once loaded, models of that runtime load in parallel."""
    from pinnace.repository import repository as repository_module
    from tests.models import write_python_model

    monkeypatch.setattr(repository_module, "_INITIALISED", set())
    root = tmp_path / "repo"
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 1]}],
    }
    for name in ("a", "b", "c"):
        write_python_model(root, name, TIMED_LOAD, warmup=False, **signature)
    repo = repository(root)
    await repo.load_all()  # all three start before any has finished: they take turns
    first = _load_times(root)
    assert len(first) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(first))

    (root / "loads.txt").unlink()
    for name in ("d", "e", "f"):
        write_python_model(root, name, TIMED_LOAD, warmup=False, **signature)
    await asyncio.gather(*(repo.load(name) for name in ("d", "e", "f")))
    later = _load_times(root)
    assert len(later) == 3
    assert max(start for start, _ in later) < min(end for _, end in later)  # all at once
    await repo.unload_all()
