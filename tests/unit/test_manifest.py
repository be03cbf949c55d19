from __future__ import annotations

from pathlib import Path

import pytest

from pinnace.errors import ManifestError
from pinnace.manifest import dump_manifest, load_manifest, parse_manifest

VALID = """
name: iris
runtime: onnx
description: flowers
inputs:
  - {name: input, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: label, datatype: INT64, shape: [-1]}
batching: {max_batch_size: 8, max_queue_delay_us: 100}
version_policy: {all: true}
"""


def test_valid_manifest_parses_with_defaults() -> None:
    m = parse_manifest(VALID)
    assert m.name == "iris"
    assert m.inputs[0].shape == [-1, 4]
    assert m.batching.max_batch_size == 8
    assert m.batching.max_queue_size == 1024
    assert m.version_policy.all
    assert m.trusted is False
    assert m.batched


def test_round_trip_through_yaml() -> None:
    m = parse_manifest(VALID)
    assert parse_manifest(dump_manifest(m)) == m


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID + "colour: blue\n", "colour"),
        (VALID.replace("max_batch_size: 8", "max_batch_size: eight"), "batching.max_batch_size"),
        (VALID.replace("datatype: FP32", "datatype: FLOAT"), "inputs[0].datatype"),
        (VALID.replace("shape: [-1, 4]", "shape: [-2, 4]"), "inputs[0].shape"),
        (VALID.replace("name: iris", "name: ../etc"), "name"),
        (VALID.replace("{all: true}", "{all: true, latest: 2}"), "version_policy"),
        (VALID + "artifacts: {'../x/model.onnx': abc}\n", "artifacts"),
        (VALID + "instances: 0\n", "instances"),
    ],
)
def test_errors_name_the_key_and_the_file(text: str, key: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, source="iris/model.yaml")
    assert "iris/model.yaml" in info.value.message
    assert key in info.value.message


def test_missing_required_key() -> None:
    with pytest.raises(ManifestError, match="runtime"):
        parse_manifest("name: x\n")


def test_not_yaml_and_not_a_mapping() -> None:
    with pytest.raises(ManifestError, match="not valid YAML"):
        parse_manifest("name: [unclosed")
    with pytest.raises(ManifestError, match="mapping"):
        parse_manifest("- a\n- b\n")


def test_load_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    path = tmp_path / "m" / "model.yaml"
    path.write_text("name: m\nruntime: onnx\nbogus: 1\n")
    with pytest.raises(ManifestError, match=r"m/model.yaml: .*bogus"):
        load_manifest(path)
