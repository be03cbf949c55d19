"""The explicit registry of runtimes: manifest ``runtime`` key → implementing class.

Classes are named by import path and imported on first use so that serving ONNX models never
imports torch or tensorflow.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pinnace.errors import ModelLoadError

if TYPE_CHECKING:
    from pinnace.runtimes.base import Runtime

_RUNTIMES: Final[dict[str, str]] = {
    "onnx": "pinnace.runtimes.onnx:OnnxRuntime",
    "sklearn": "pinnace.runtimes.sklearn:SklearnRuntime",
    "python": "pinnace.runtimes.python:PythonRuntime",
    "torchscript": "pinnace.runtimes.torchscript:TorchScriptRuntime",
    "xgboost": "pinnace.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "pinnace.runtimes.lightgbm:LightGBMRuntime",
    "keras": "pinnace.runtimes.keras:KerasRuntime",
    "tensorflow": "pinnace.runtimes.tensorflow:TensorFlowRuntime",
    "openvino": "pinnace.runtimes.openvino:OpenVINORuntime",
}


def available_runtimes() -> list[str]:
    """Every registered runtime key (their frameworks may or may not be installed)."""
    return sorted(_RUNTIMES)


def runtime_class(name: str) -> type[Runtime]:
    """Import and return the runtime class for ``name``; clear errors when it cannot be had."""
    target = _RUNTIMES.get(name)
    if target is None:
        raise ModelLoadError(
            f"unknown runtime {name!r}; expected one of {', '.join(available_runtimes())}"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or "a dependency"
        raise ModelLoadError(
            f"runtime {name!r} needs {missing!r}, which is not installed "
            f"(pip install 'pinnace[{name}]')"
        ) from exc
    cls: type[Runtime] = getattr(module, attr)
    return cls


_SUFFIXES: Final[dict[str, str]] = {
    ".onnx": "onnx",
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".py": "python",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".torchscript": "torchscript",
    ".ubj": "xgboost",
    ".keras": "keras",
    ".h5": "keras",
    ".xml": "openvino",
}


def guess_runtime(path: Path) -> str | None:
    """The runtime a file or folder most likely needs, from its name; None when unsure."""
    if path.is_dir():
        return "tensorflow" if (path / "saved_model.pb").exists() else None
    if path.suffix in _SUFFIXES:
        return _SUFFIXES[path.suffix]
    if path.suffix == ".json":
        return "xgboost"
    if path.suffix == ".txt":
        return "lightgbm"
    return None
