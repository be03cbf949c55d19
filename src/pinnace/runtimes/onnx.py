"""ONNX models through onnxruntime, on the best execution provider this machine has.

**Execution providers.** ``options.providers`` lists providers in order of preference, by full
name (``CUDAExecutionProvider``) or short name (``tensorrt``, ``cuda``, ``cpu``, ``openvino``,
``dml``, ``coreml``, ``rocm``, ``migraphx``); an entry may carry provider options as a one-key
mapping (``{cuda: {device_id: 1}}``). The default, ``auto``, means CUDA when this onnxruntime
build and machine have it, else CPU; TensorRT is used only when listed, because it compiles an
engine at every load. Providers missing from the onnxruntime build are skipped; a provider that
fails while the session is created (no GPU, missing CUDA or TensorRT libraries) is dropped and
the next one tried; CPU always closes the list. What was used, what was asked for, and why
anything was skipped are reported in model metadata (``execution_providers``,
``execution_providers_requested``, ``execution_provider_notes``).

Other ``options``: ``intra_op_threads`` (default 1), ``inter_op_threads`` (default 1),
``graph_optimization`` (all | extended | basic | off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

from pinnace.errors import ModelLoadError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes._support import check_options, clean_error, int_option, str_option
from pinnace.runtimes.base import Arrays, Runtime

_OPTIONS: Final = ("intra_op_threads", "inter_op_threads", "graph_optimization", "providers")
CPU: Final = "CPUExecutionProvider"
PROVIDER_ALIASES: Final[dict[str, str]] = {
    "cpu": CPU,
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
}
AUTO_PROVIDERS: Final = ("CUDAExecutionProvider", CPU)

Provider = tuple[str, dict[str, Any]]

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
    """An ``onnxruntime.InferenceSession`` (thread-safe for concurrent ``run`` calls)."""

    format: ClassVar[str] = "onnx"
    platform: ClassVar[str] = "onnxruntime_onnx"
    default_model_file: ClassVar[str] = "model.onnx"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._session: Any = None
        self._run: Any = None
        self._providers: list[str] = []
        self._requested: list[str] = []
        self._notes: list[str] = []

    def load(self) -> None:
        import onnxruntime as ort

        opts = check_options(self.manifest, self.format, _OPTIONS)
        path = self._require_file()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int_option(opts, "intra_op_threads", 1, minimum=0)
        so.inter_op_num_threads = int_option(opts, "inter_op_threads", 1, minimum=0)
        so.graph_optimization_level = _optimization_level(ort, str_option(opts, "graph_optimization", "all"))
        requested = parse_providers(opts.get("providers", "auto"))
        self._requested = [name for name, _ in requested]
        candidates, self._notes = usable_providers(requested, ort.get_available_providers())

        def create(providers: list[Provider]) -> Any:
            return ort.InferenceSession(
                str(path),
                sess_options=so,
                providers=[name for name, _ in providers],
                provider_options=[options for _, options in providers],
            )

        try:
            self._session, notes = create_with_fallback(create, candidates)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"onnxruntime could not load {path.name!r}: {clean_error(exc)}") from exc
        self._notes += notes
        self._providers = list(self._session.get_providers())
        # The binding under InferenceSession.run: that wrapper re-validates input names and
        # ownership on every call (3-5 µs, more than a small model's whole run), which the
        # signature check has already done. Public run() where the binding is not there.
        self._run = getattr(self._session, "_sess", self._session).run
        for name in self._requested:
            if name != CPU and name in dict(candidates) and name not in self._providers:
                # onnxruntime itself may drop a provider it cannot start, without raising.
                self._notes.append(f"{name} was not started by onnxruntime")

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        results = self._run(list(outputs), inputs, None)
        return dict(zip(outputs, results, strict=True))

    def unload(self) -> None:
        self._session = self._run = None

    def metadata_parameters(self) -> dict[str, Any]:
        params = {
            "execution_providers": ",".join(self._providers),
            "execution_providers_requested": ",".join(self._requested),
        }
        if self._notes:
            params["execution_provider_notes"] = "; ".join(self._notes)
        return params

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"onnxruntime could not load {path.name!r}: {clean_error(exc)}") from exc
        return (
            [_signature(a) for a in session.get_inputs()],
            [_signature(a) for a in session.get_outputs()],
        )


def parse_providers(value: Any) -> list[Provider]:
    """``options.providers`` as (full name, provider options) pairs; ``auto`` expands."""
    if value == "auto":
        return [(name, {}) for name in AUTO_PROVIDERS]
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise ModelLoadError("options.providers must be 'auto' or a non-empty list of providers")
    parsed: list[Provider] = []
    for entry in value:
        options: Any
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            ((name, options),) = entry.items()
            if not isinstance(options, dict):
                raise ModelLoadError(f"options.providers: the options of {name!r} must be a mapping")
        else:
            raise ModelLoadError("options.providers entries are names or {name: {option: value}}")
        full = PROVIDER_ALIASES.get(str(name).lower(), str(name))
        if not full.endswith("ExecutionProvider"):
            raise ModelLoadError(
                f"options.providers: unknown provider {name!r}; use a full onnxruntime name or one of "
                f"{', '.join(sorted(PROVIDER_ALIASES))}"
            )
        parsed.append((full, {str(k): str(v) for k, v in options.items()}))
    return parsed


def usable_providers(requested: list[Provider], available: Sequence[str]) -> tuple[list[Provider], list[str]]:
    """The requested providers this onnxruntime build has, CPU last; notes say what was skipped."""
    notes = [f"{name} is not in this onnxruntime build" for name, _ in requested if name not in available]
    usable = [(name, options) for name, options in requested if name in available and name != CPU]
    cpu = next(((n, o) for n, o in requested if n == CPU), (CPU, {}))
    return [*usable, cpu], notes


def create_with_fallback(
    create: Callable[[list[Provider]], Any], providers: list[Provider]
) -> tuple[Any, list[str]]:
    """Create a session, dropping the first accelerator each time creation fails.

    A GPU provider can be in the build yet fail to start (no device, missing CUDA/TensorRT
    libraries); that costs one failed attempt, noted, never the model. The error of the final,
    CPU-only attempt is the model's own and propagates.
    """
    notes: list[str] = []
    remaining = list(providers)
    while True:
        try:
            return create(remaining), notes
        except Exception as exc:
            accelerators = [p for p in remaining if p[0] != CPU]
            if not accelerators:
                raise
            dropped = accelerators[0]
            remaining.remove(dropped)
            notes.append(f"{dropped[0]} failed to start ({clean_error(exc, limit=120)}); fell back")


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
