"""ONNX models through onnxruntime."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pinnace.errors import ModelLoadError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes.base import Arrays, Runtime

# onnxruntime's type strings → V2 datatypes.
_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(bfloat16)": "BF16",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class OnnxRuntime(Runtime):
    """``options``: ``intra_op_threads`` (default 1), ``inter_op_threads`` (default 1),
    ``providers`` (list, default CPU), ``graph_optimization`` (all | extended | basic | off)."""

    format: ClassVar[str] = "onnx"
    platform: ClassVar[str] = "onnxruntime_onnx"
    default_model_file: ClassVar[str] = "model.onnx"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: Any = None
        self._providers: list[str] = []

    def load(self) -> None:
        import onnxruntime as ort

        path = self._require_file()
        opts = self.manifest.options
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(opts.get("intra_op_threads", 1))
        so.inter_op_num_threads = int(opts.get("inter_op_threads", 1))
        so.graph_optimization_level = _optimization_level(ort, str(opts.get("graph_optimization", "all")))
        requested = list(opts.get("providers", ["CPUExecutionProvider"]))
        available = set(ort.get_available_providers())
        providers = [p for p in requested if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime could not load {path.name!r}: {_short(exc)}") from exc
        self._providers = list(self._session.get_providers())

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        results = self._session.run(list(outputs), inputs)
        return dict(zip(outputs, results, strict=True))

    def unload(self) -> None:
        self._session = None

    def metadata_parameters(self) -> dict[str, Any]:
        return {"execution_providers": ",".join(self._providers)}

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not load {path.name!r}: {_short(exc)}") from exc
        return (
            [_signature(a) for a in session.get_inputs()],
            [_signature(a) for a in session.get_outputs()],
        )


def _signature(arg: Any) -> TensorSignature:
    datatype = _ORT_TYPES.get(arg.type)
    if datatype is None:
        raise ModelLoadError(f"tensor {arg.name!r} has type {arg.type}, which V2 cannot carry")
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in (arg.shape or [])]
    return TensorSignature(name=arg.name, datatype=datatype, shape=shape)


def _optimization_level(ort: Any, name: str) -> Any:
    levels = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }
    if name not in levels:
        raise ModelLoadError(f"options.graph_optimization must be one of {', '.join(levels)}")
    return levels[name]


def _short(exc: BaseException) -> str:
    # onnxruntime messages can carry absolute paths; keep the first line without them.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if "/" not in text else text.split("/")[0].rstrip(" :'\"") + " …"
