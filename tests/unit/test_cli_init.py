from __future__ import annotations

import shutil
from pathlib import Path

import joblib
import yaml
from click.testing import CliRunner
from sklearn.datasets import load_iris
from sklearn.tree import DecisionTreeClassifier

from pinnace.cli.main import main
from pinnace.manifest import load_manifest
from pinnace.repository.integrity import sha256_file
from tests.conftest import EXAMPLES


def test_init_onnx_infers_signature_and_hashes(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    result = CliRunner().invoke(
        main,
        ["init", str(EXAMPLES / "iris" / "1" / "model.onnx"), "--name", "flowers", "--repo", str(repo),
         "--max-batch-size", "8", "--description", "d"],
    )
    assert result.exit_code == 0, result.output
    manifest = load_manifest(repo / "flowers" / "model.yaml")
    assert manifest.runtime == "onnx"
    assert [(t.name, t.datatype, t.shape) for t in manifest.inputs] == [("input", "FP32", [-1, 4])]
    assert [t.name for t in manifest.outputs] == ["label", "probabilities"]
    assert manifest.batching.max_batch_size == 8
    artifact = repo / "flowers" / "1" / "model.onnx"
    assert manifest.artifacts == {"1/model.onnx": sha256_file(artifact)}
    again = CliRunner().invoke(main, ["init", str(artifact), "--name", "flowers", "--repo", str(repo)])
    assert again.exit_code != 0 and "--force" in again.output


def test_init_sklearn_needs_trust(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "tree.joblib"
    joblib.dump(DecisionTreeClassifier(max_depth=2).fit(x, y), path)
    refused = CliRunner().invoke(main, ["init", str(path), "--name", "tree", "--repo", str(tmp_path / "r")])
    assert refused.exit_code != 0
    assert "--trusted" in refused.output
    assert not (tmp_path / "r" / "tree").exists()
    ok = CliRunner().invoke(main, ["init", str(path), "--name", "tree", "--repo", str(tmp_path / "r"), "--trusted"])
    assert ok.exit_code == 0, ok.output
    manifest = load_manifest(tmp_path / "r" / "tree" / "model.yaml")
    assert manifest.trusted
    assert manifest.inputs[0].shape == [-1, 4]
    assert [(o.name, o.shape) for o in manifest.outputs] == [("predict", [-1]), ("predict_proba", [-1, 3])]


def test_hash_command_records_new_versions(tmp_path: Path) -> None:
    model = tmp_path / "iris"
    shutil.copytree(EXAMPLES / "iris", model)
    shutil.copytree(model / "1", model / "2")
    result = CliRunner().invoke(main, ["hash", str(model)])
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load((model / "model.yaml").read_text())
    assert set(doc["artifacts"]) == {"1/model.onnx", "2/model.onnx"}


def test_init_refuses_bad_names(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["init", str(EXAMPLES / "iris" / "1" / "model.onnx"), "--name", "../x", "--repo", str(tmp_path)]
    )
    assert result.exit_code != 0
    assert "--name" in result.output
