"""OpenVINO: IR models (``model.xml`` with its ``model.bin``) and ONNX files compiled by
OpenVINO, run on CPU (or another OpenVINO device where one is installed).

Loading parses a graph and weights, no code. OpenVINO's ``InferRequest`` is not safe to share
between threads, so each loaded model keeps a small pool: one request per ``manifest.instances``
(at least OpenVINO's optimal number), each used by one thread at a time.

OpenVINO's CPU plugin computes in bf16 on CPUs that have bf16 units unless told otherwise, which
moves results in the third decimal. pinnace asks for f32 by default so that predictions match
the model as exported; ``inference_precision: bf16`` trades that for speed.

``options``: ``device`` (default ``CPU``), ``threads`` (``INFERENCE_NUM_THREADS``, default 1),
``performance_hint`` (``LATENCY`` default, or ``THROUGHPUT``), ``num_streams``,
``inference_precision`` (``f32`` default, ``bf16``, ``f16``), ``config`` (further OpenVINO
properties, passed through as given).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError, ServerBusyError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes._support import (
    check_options,
    clean_error,
    fit_output,
    int_option,
    signatures_by_name,
    str_option,
)
from pinnace.runtimes.base import Arrays, Runtime

_OPTIONS: Final = ("device", "threads", "performance_hint", "num_streams", "inference_precision", "config")
_CANDIDATES: Final = ("model.xml", "model.onnx")
# How long a request waits for a free InferRequest; the pool is sized to the executor threads,
# so a wait means an overload the batcher should have refused.
_ACQUIRE_TIMEOUT_S: Final = 30.0
# OpenVINO element type names → V2 datatypes.
_TYPES: Final = {
    "f16": "FP16", "f32": "FP32", "f64": "FP64", "bf16": "BF16",
    "i8": "INT8", "i16": "INT16", "i32": "INT32", "i64": "INT64",
    "u8": "UINT8", "u16": "UINT16", "u32": "UINT32", "u64": "UINT64",
    "boolean": "BOOL", "string": "BYTES",
}


class OpenVINORuntime(Runtime):
    """A compiled OpenVINO model and its pool of infer requests."""

    format: ClassVar[str] = "openvino"
    platform: ClassVar[str] = "openvino"
    default_model_file: ClassVar[str] = "model.xml"
    model_file_candidates: ClassVar[tuple[str, ...]] = _CANDIDATES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._compiled: Any = None
        self._pool: queue.Queue[Any] = queue.Queue()
        self._output_names: list[str] = []
        self._device = ""
        self._precision = ""
        self._outputs = signatures_by_name(self.manifest.outputs)

    def load(self) -> None:
        options = check_options(self.manifest, self.format, _OPTIONS)
        device = str_option(options, "device", "CPU")
        config = _compile_config(options)
        path = self._require_file()
        model = read_model(path)
        import openvino as ov

        core = ov.Core()
        _check_device(device, list(core.available_devices))
        if not device.startswith("CPU") and "inference_precision" not in options:
            del config["INFERENCE_PRECISION_HINT"]  # other devices choose their own precision
        try:
            self._compiled = core.compile_model(model, device, config)
        except Exception as exc:
            raise ModelLoadError(f"openvino could not compile {path.name!r}: {clean_error(exc)}") from exc
        self._device = device
        self._precision = _property(self._compiled, "INFERENCE_PRECISION_HINT")
        self._output_names = [_port_name(p, i, "output") for i, p in enumerate(self._compiled.outputs)]
        size = max(self.manifest.instances, 1)
        for _ in range(size):
            self._pool.put(self._compiled.create_infer_request())

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        try:
            request = self._pool.get(timeout=_ACQUIRE_TIMEOUT_S)
        except queue.Empty:
            raise ServerBusyError("every OpenVINO infer request is busy", retry_after=1.0) from None
        try:
            try:
                results = request.infer({name: np.ascontiguousarray(a) for name, a in inputs.items()})
            except Exception as exc:  # RuntimeError with OpenVINO's C++ detail
                raise InvalidInputError(f"the model rejected the input: {clean_error(exc)}") from exc
            # Copies: the request reuses its output memory on the next call.
            produced = {
                name: np.array(results[port], copy=True)
                for name, port in zip(self._output_names, self._compiled.outputs, strict=True)
            }
        finally:
            self._pool.put(request)
        wanted = list(outputs) or self._output_names
        missing = [n for n in wanted if n not in produced]
        if missing:
            raise InvalidInputError(f"the model has no output {missing[0]!r}")
        return {n: fit_output(produced[n], self._outputs.get(n)) for n in wanted}

    def unload(self) -> None:
        while not self._pool.empty():
            self._pool.get_nowait()
        self._compiled = None

    def metadata_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self._device:
            params["device"] = self._device
        if self._precision:
            params["inference_precision"] = self._precision
        return params

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        model = read_model(path)
        return (
            [_signature(p, i, "input") for i, p in enumerate(model.inputs)],
            [_signature(p, i, "output") for i, p in enumerate(model.outputs)],
        )


def read_model(path: Path) -> Any:
    """Read IR (``.xml`` + ``.bin``) or ONNX, checking the pieces before OpenVINO parses them."""
    import openvino as ov

    if path.suffix == ".xml":
        weights = path.with_suffix(".bin")
        if not weights.is_file():
            raise ModelLoadError(f"{path.name!r} needs its weights file {weights.name!r} beside it")
    elif path.suffix != ".onnx":
        raise ModelLoadError(f"{path.name!r}: OpenVINO reads IR (.xml + .bin) or ONNX (.onnx) files")
    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"openvino could not read {path.name!r} (corrupt or truncated?): {clean_error(exc)}"
        ) from exc


def _check_device(device: str, available: list[str]) -> None:
    if device.startswith(("AUTO", "MULTI", "HETERO")):
        return  # OpenVINO's virtual devices pick among the real ones themselves
    families = {d.split(".")[0] for d in available}
    if device.split(".", maxsplit=1)[0] not in families and device not in available:
        raise ModelLoadError(
            f"options.device {device!r} is not available; this machine has {', '.join(available) or 'none'}"
        )


def _compile_config(options: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "INFERENCE_NUM_THREADS": int_option(options, "threads", 1, minimum=1),
        "PERFORMANCE_HINT": str_option(options, "performance_hint", "LATENCY", ("LATENCY", "THROUGHPUT")),
        "INFERENCE_PRECISION_HINT": str_option(options, "inference_precision", "f32", ("f32", "bf16", "f16")),
    }
    streams = int_option(options, "num_streams", None, minimum=1)
    if streams is not None:
        config["NUM_STREAMS"] = streams
    extra = options.get("config", {})
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        raise ModelLoadError("options.config must map OpenVINO property names to values")
    config.update({k: v if isinstance(v, int | float | bool) else str(v) for k, v in extra.items()})
    return config


def _property(compiled: Any, key: str) -> str:
    try:
        value = compiled.get_property(key)
    except Exception:  # not every device reports every property
        return ""
    return str(getattr(value, "get_type_name", lambda: value)())


def _port_name(port: Any, index: int, group: str) -> str:
    try:
        return str(port.get_any_name())
    except RuntimeError:  # an unnamed port
        return f"{group}_{index}"


def _signature(port: Any, index: int, group: str) -> TensorSignature:
    name = _port_name(port, index, group)
    kind = port.get_element_type().get_type_name()
    datatype = _TYPES.get(kind)
    if datatype is None:
        raise ModelLoadError(f"tensor {name!r} has element type {kind}, which V2 cannot carry")
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        raise ModelLoadError(f"tensor {name!r} has a dynamic rank; write its shape in the manifest")
    dims = [d.get_length() if d.is_static else -1 for d in shape]
    return TensorSignature(name=name, datatype=datatype, shape=dims)
