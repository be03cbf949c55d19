"""OnnxRuntime's execution-provider selection: requested order, skipping what the build lacks,
falling back past providers that fail to start, and saying so in metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from pinnace.errors import ModelLoadError
from pinnace.manifest import Manifest, parse_manifest
from pinnace.runtimes.onnx import (
    CPU,
    OnnxRuntime,
    create_with_fallback,
    parse_providers,
    usable_providers,
)

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from examples.formats.onnx_providers_model import mlp_onnx  # noqa: E402

CUDA, TRT = "CUDAExecutionProvider", "TensorrtExecutionProvider"


def manifest(**fields: Any) -> Manifest:
    return parse_manifest(yaml.safe_dump({"name": "m", "runtime": "onnx", **fields}))


@pytest.fixture
def version(tmp_path: Path) -> Path:
    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    onnx.save(mlp_onnx(seed=4), folder / "model.onnx")
    return folder


def test_auto_means_cuda_then_cpu() -> None:
    assert parse_providers("auto") == [(CUDA, {}), (CPU, {})]


def test_short_names_and_provider_options() -> None:
    assert parse_providers(["tensorrt", {"cuda": {"device_id": 1}}, "CPUExecutionProvider"]) == [
        (TRT, {}),
        (CUDA, {"device_id": "1"}),
        (CPU, {}),
    ]
    with pytest.raises(ModelLoadError, match="unknown provider 'cdua'"):
        parse_providers(["cdua"])
    with pytest.raises(ModelLoadError, match="non-empty list"):
        parse_providers("cuda")


def test_providers_missing_from_the_build_are_skipped_and_cpu_closes_the_list() -> None:
    usable, notes = usable_providers([(TRT, {}), (CUDA, {})], [CUDA, CPU])
    assert usable == [(CUDA, {}), (CPU, {})]
    assert notes == [f"{TRT} is not in this onnxruntime build"]


def test_a_provider_that_fails_to_start_is_dropped() -> None:
    attempts: list[list[str]] = []

    def create(providers: list[tuple[str, dict[str, Any]]]) -> str:
        names = [name for name, _ in providers]
        attempts.append(names)
        if TRT in names:
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file: /usr/lib/x86_64/libnvinfer.so.10")
        return "session"

    session, notes = create_with_fallback(create, [(TRT, {}), (CUDA, {}), (CPU, {})])
    assert session == "session"
    assert attempts == [[TRT, CUDA, CPU], [CUDA, CPU]]
    assert notes[0].startswith(f"{TRT} failed to start") and "/usr/lib" not in notes[0]


def test_the_models_own_error_surfaces_on_cpu() -> None:
    def create(providers: list[tuple[str, dict[str, Any]]]) -> str:
        raise RuntimeError("bad model")

    with pytest.raises(RuntimeError, match="bad model"):
        create_with_fallback(create, [(CUDA, {}), (CPU, {})])


def test_metadata_reports_what_runs_and_why(version: Path) -> None:
    runtime = OnnxRuntime(manifest(options={"providers": ["tensorrt", "cuda", "cpu"]}), version)
    runtime.load()
    params = runtime.metadata_parameters()
    available = ort.get_available_providers()
    assert params["execution_providers_requested"] == f"{TRT},{CUDA},{CPU}"
    assert params["execution_providers"].split(",")[-1] == CPU
    if CUDA not in available:
        assert params["execution_providers"] == CPU
        assert f"{CUDA} is not in this onnxruntime build" in params["execution_provider_notes"]
    rows = np.ones((2, 4), np.float32)
    assert runtime.predict({"x": rows}, ["probabilities"])["probabilities"].shape == (2, 3)


def test_unknown_options_fail_loudly(version: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"options\.provider is not an option"):
        OnnxRuntime(manifest(options={"provider": ["cpu"]}), version).load()


def test_a_truncated_model_fails_cleanly(tmp_path: Path, version: Path) -> None:
    path = version / "model.onnx"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelLoadError) as caught:
        OnnxRuntime(manifest(), version).load()
    assert "model.onnx" in caught.value.message and str(tmp_path) not in caught.value.message
