"""OpenVINORuntime: an IR written by openvino.save_model and an ONNX file, compiled for CPU."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import ModelLoadError
from pinnace.manifest import Manifest, parse_manifest

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from examples.formats.onnx_providers_model import mlp_onnx  # noqa: E402

from pinnace.runtimes.openvino import OpenVINORuntime  # noqa: E402

ROWS = np.random.default_rng(3).standard_normal((6, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    version = tmp_path_factory.mktemp("ov") / "m" / "1"
    version.mkdir(parents=True)
    onnx.save(mlp_onnx(seed=5), version / "model.onnx")
    ov.save_model(ov.convert_model(str(version / "model.onnx")), str(version / "model.xml"), compress_to_fp16=False)
    return version


def manifest(**fields: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump({"name": "m", "runtime": "openvino", **fields}))


def loaded(version: Path, **fields: Any) -> OpenVINORuntime:
    runtime = OpenVINORuntime(manifest(**fields), version)
    runtime.load()
    return runtime


def openvino_says(path: Path) -> np.ndarray:
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.array(compiled({"x": ROWS})[compiled.outputs[0]], copy=True)


@pytest.mark.parametrize("filename", ["model.xml", "model.onnx"])
def test_predictions_match_openvino(models: Path, filename: str) -> None:
    runtime = loaded(models, model_file=filename)
    result = runtime.predict({"x": ROWS}, ["probabilities"])
    np.testing.assert_allclose(result["probabilities"], openvino_says(models / filename), rtol=0, atol=1e-5)
    assert runtime.metadata_parameters() == {"device": "CPU", "inference_precision": "f32"}


def test_signature_is_inferred(models: Path) -> None:
    inputs, outputs = OpenVINORuntime.inspect(models / "model.xml")  # type: ignore[misc]
    assert [(t.name, t.datatype, t.shape) for t in inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, t.shape) for t in outputs] == [("probabilities", "FP32", [-1, 3])]


def test_concurrent_requests_each_get_their_own_infer_request(models: Path) -> None:
    runtime = loaded(models, instances=3)
    expected = openvino_says(models / "model.xml")
    failures: list[str] = []

    def work(rows: int) -> None:
        for _ in range(30):
            got = runtime.predict({"x": ROWS[:rows]}, [])["probabilities"]
            if not np.allclose(got, expected[:rows], atol=1e-5):
                failures.append(f"{rows} rows")

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 3, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_unavailable_devices_and_unknown_options_are_refused(models: Path) -> None:
    with pytest.raises(ModelLoadError, match="'NPU' is not available"):
        loaded(models, options={"device": "NPU"})
    with pytest.raises(ModelLoadError, match="inference_precision must be one of"):
        loaded(models, options={"inference_precision": "int4"})


@pytest.mark.parametrize(("victim", "keep"), [("model.xml", 0.5), ("model.xml", 0.0), ("model.bin", 0.5), ("model.onnx", 0.6)])
def test_damaged_files_fail_cleanly(tmp_path: Path, models: Path, victim: str, keep: float) -> None:
    import shutil

    copy = tmp_path / "m" / "1"
    shutil.copytree(models, copy)
    path = copy / victim
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    with pytest.raises(ModelLoadError) as caught:
        loaded(copy, model_file="model.onnx" if victim == "model.onnx" else "model.xml")
    assert "corrupt or truncated" in caught.value.message or "could not compile" in caught.value.message
    assert str(tmp_path) not in caught.value.message


def test_ir_without_weights_says_so(tmp_path: Path, models: Path) -> None:
    import shutil

    copy = tmp_path / "m" / "1"
    shutil.copytree(models, copy)
    (copy / "model.bin").unlink()
    with pytest.raises(ModelLoadError, match=r"needs its weights file 'model\.bin'"):
        loaded(copy)
