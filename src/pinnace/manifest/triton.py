"""Triton model configurations (``config.pbtxt``) read as pinnace manifests.

A Triton model folder — ``config.pbtxt`` beside numbered version folders — is served as it is:
:func:`manifest_from_triton` converts the configuration in memory each time the model loads.
``pinnace init --from triton`` writes the same conversion out as ``model.yaml``
(:mod:`pinnace.manifest.importers`).

Mapping:

- ``platform``/``backend`` → ``runtime``: ``onnxruntime_onnx``/``onnxruntime`` → onnx,
  ``pytorch_libtorch``/``pytorch`` → torchscript, ``tensorflow_savedmodel`` → tensorflow,
  ``openvino`` → openvino, and the FIL backend's XGBoost JSON/UBJSON and LightGBM models →
  xgboost/lightgbm. Without either, the runtime is told from the version folder's file names,
  as Triton does.
- ``input``/``output`` ``dims`` exclude the batch dimension when ``max_batch_size > 0``; pinnace
  shapes include it, so a leading ``-1`` is added. Without inputs/outputs (Triton's
  auto-complete) the signature is read from the model file where its format declares one.
- ``max_batch_size`` → ``batching.max_batch_size``; ``dynamic_batching.max_queue_delay_microseconds``
  → ``batching.max_queue_delay_us`` (0 without dynamic batching: requests are run as they come);
  ``default_queue_policy.max_queue_size``/``default_timeout_microseconds`` → ``batching``.
- ``instance_group[*].count`` → ``instances`` (their sum); ``KIND_GPU`` → ``resources.gpu`` and
  a GPU device for the runtime (CUDA provider, ``device: cuda``).
- ``version_policy``, ``default_model_filename``, ONNX Runtime/PyTorch/OpenVINO thread and
  stream ``parameters``, ONNX Runtime's TensorRT/OpenVINO accelerators → their equivalents.

Nothing is dropped silently. Settings that would change what the model computes or how it is
called (ensembles, the Python backend, sequence batching, decoupled models, ``reshape``, shape
tensors, ragged batches, custom op libraries, repository agents, TensorRT plans) are
**errors** naming the key. Settings that only tune scheduling or hardware (priority levels,
preferred batch sizes, warmup samples, CUDA graphs, pinned memory, the response cache, …) are
**warnings** naming the key, logged when the model loads and written into an imported
``model.yaml`` as comments.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from pinnace.errors import ManifestError, PinnaceError
from pinnace.manifest.loader import parse_manifest
from pinnace.manifest.pbtxt import Message, PbtxtError, parse
from pinnace.manifest.schema import Manifest

log = logging.getLogger(__name__)

CONFIG_FILE: Final = "config.pbtxt"

_DATATYPES: Final = {
    "TYPE_BOOL": "BOOL", "TYPE_UINT8": "UINT8", "TYPE_UINT16": "UINT16", "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64", "TYPE_INT8": "INT8", "TYPE_INT16": "INT16", "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64", "TYPE_FP16": "FP16", "TYPE_FP32": "FP32", "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES", "TYPE_BF16": "BF16",
}
_PLATFORMS: Final = {
    "onnxruntime_onnx": "onnx",
    "pytorch_libtorch": "torchscript",
    "tensorflow_savedmodel": "tensorflow",
    "openvino": "openvino",
}
_BACKENDS: Final = {"onnxruntime": "onnx", "pytorch": "torchscript", "tensorflow": "tensorflow", "openvino": "openvino"}
_REFUSED_PLATFORMS: Final = {
    "ensemble": "ensembles chain models inside the server; serve the member models and chain them in the client "
    "or a custom Python model",
    "python": "the Python backend runs arbitrary model.py code; port it to a pinnace custom Python model "
    "(runtime: python), which must be trusted",
    "tensorrt_plan": "TensorRT engines are tied to the GPU and TensorRT version that built them; serve the ONNX model "
    "with options.providers: [tensorrt, cuda, cpu]",
    "tensorrt": "TensorRT engines are tied to the GPU and TensorRT version that built them; serve the ONNX model "
    "with options.providers: [tensorrt, cuda, cpu]",
    "tensorflow_graphdef": "frozen GraphDefs are not served; export a SavedModel",
    "dali": "DALI pipelines are not served",
    "vllm": "LLM engines are not served by pinnace",
    "tensorrtllm": "LLM engines are not served by pinnace",
}
# Triton's default artifact names per runtime (its own defaults where it has them).
_DEFAULT_FILES: Final = {
    "onnx": "model.onnx",
    "torchscript": "model.pt",
    "tensorflow": "model.savedmodel",
    "openvino": "model.xml",
}
# FIL backend model_type → (runtime, default file name in the version folder).
_FIL_TYPES: Final = {
    "xgboost_json": ("xgboost", "xgboost.json"),
    "xgboost_ubj": ("xgboost", "xgboost.ubj"),
    "lightgbm": ("lightgbm", "model.txt"),
}
_INDEXED: Final = re.compile(r"__(\d+)$")


class Conversion:
    """A converted configuration: the manifest, and what could not be carried over."""

    def __init__(self, manifest: Manifest, warnings: list[str]) -> None:
        self.manifest = manifest
        self.warnings = warnings


def manifest_from_triton(model_dir: Path) -> Manifest:
    """The manifest for a Triton model folder; warnings are logged, errors raised."""
    conversion = convert_triton(model_dir)
    for warning in conversion.warnings:
        log.warning("%s/%s: %s", model_dir.name, CONFIG_FILE, warning)
    return conversion.manifest


def convert_triton(model_dir: Path, *, name: str | None = None) -> Conversion:
    """Convert ``model_dir/config.pbtxt``; raises :class:`ManifestError` naming the first refused key."""
    source = f"{model_dir.name}/{CONFIG_FILE}"
    try:
        text = (model_dir / CONFIG_FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}: cannot be read") from exc
    try:
        config = parse(text)
    except PbtxtError as exc:
        raise ManifestError(f"{source}: not valid protobuf text format: {exc}") from None
    return _Converter(model_dir, config, source, name or model_dir.name).convert()


class _Converter:
    def __init__(self, model_dir: Path, config: Message, source: str, name: str) -> None:
        self.model_dir = model_dir
        self.config = config
        self.source = source
        self.name = name
        self.warnings: list[str] = []
        self.data: dict[str, Any] = {"name": name}
        self.options: dict[str, Any] = {}
        self.gpu = False

    # -- helpers ------------------------------------------------------------------------------

    def fail(self, key: str, why: str) -> None:
        raise ManifestError(f"{self.source}: {key!r} is not supported: {why}")

    def warn(self, key: str, why: str) -> None:
        self.warnings.append(f"{key!r} not carried over: {why}")

    def one(self, message: Message, key: str, path: str, default: Any = None) -> Any:
        values = message.get(key, [])
        if len(values) > 1:
            raise ManifestError(f"{self.source}: {path}{key!r} is given {len(values)} times")
        return values[0] if values else default

    def visit(self, message: Message, path: str, handlers: dict[str, Callable[[list[Any], str], None]]) -> None:
        for key, values in message.items():
            handler = handlers.get(key)
            if handler is None:
                self.fail(path + key, "pinnace does not know this Triton setting")
            else:
                handler(values, path + key)

    def typed(self, value: Any, kind: type[Any], key: str) -> Any:
        if kind is int and isinstance(value, bool):
            raise ManifestError(f"{self.source}: {key!r} must be a whole number")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind):
            raise ManifestError(f"{self.source}: {key!r} must be {kind.__name__}")
        return value

    # -- the conversion ----------------------------------------------------------------------

    def convert(self) -> Conversion:
        c = self.config
        declared_name = self.one(c, "name", "")
        if declared_name is not None and declared_name != self.name:
            self.warnings.append(
                f"'name' {declared_name!r} differs from the folder; the model is served as {self.name!r}"
            )
        runtime, default_file = self.runtime()
        self.data["runtime"] = runtime
        filename = self.one(c, "default_model_filename", "")
        self.data["model_file"] = str(filename) if filename else default_file
        max_batch = int(self.typed(self.one(c, "max_batch_size", "", 0), int, "max_batch_size"))
        if max_batch < 0:
            raise ManifestError(f"{self.source}: 'max_batch_size' must be >= 0")
        self.data["batching"] = {"max_batch_size": max_batch, "max_queue_delay_us": 0}
        ignore = {"name", "platform", "backend", "default_model_filename", "max_batch_size"}
        handlers: dict[str, Callable[[list[Any], str], None]] = {
            **dict.fromkeys(ignore, lambda values, key: None),
            "runtime": lambda v, k: self.fail(k, "custom backend libraries and model.py runtimes are not served"),
            "version_policy": lambda v, k: self.version_policy(v[-1], k),
            "input": lambda v, k: self.tensors(v, "inputs", k, max_batch),
            "output": lambda v, k: self.tensors(v, "outputs", k, max_batch),
            "batch_input": lambda v, k: self.fail(k, "batch inputs are generated by Triton's batcher"),
            "batch_output": lambda v, k: self.fail(k, "batch outputs are split by Triton's batcher"),
            "optimization": lambda v, k: self.optimization(v[-1], k + ".", runtime),
            "dynamic_batching": lambda v, k: self.dynamic_batching(v[-1], k + ".", max_batch),
            "sequence_batching": lambda v, k: self.fail(k, "stateful sequence models are not served"),
            "ensemble_scheduling": lambda v, k: self.fail(k, _REFUSED_PLATFORMS["ensemble"]),
            "instance_group": self.instance_groups,
            "cc_model_filenames": lambda v, k: self.warn(
                k, "per-GPU-architecture files; default_model_filename is used"),
            "metric_tags": lambda v, k: self.warn(k, "pinnace labels metrics by model and version only"),
            "parameters": lambda v, k: self.parameters(v, k, runtime),
            "model_warmup": lambda v, k: self.warn(k, "pinnace warms up with one request of zeros (warmup: true)"),
            "model_operations": lambda v, k: self.fail(k, "custom operation libraries load native code"),
            "model_transaction_policy": lambda v, k: self.transaction_policy(v[-1], k + "."),
            "model_repository_agents": lambda v, k: self.fail(k, "repository agents rewrite artifacts before loading"),
            "response_cache": lambda v, k: self.response_cache(v[-1], k),
            "model_metrics": lambda v, k: self.warn(k, "custom histogram buckets are not configurable per model"),
        }
        self.visit(c, "", handlers)
        if "inputs" not in self.data or "outputs" not in self.data:
            self.autocomplete(runtime, max_batch)
        if self.one(c, "backend", "", "") == "fil":
            self.fil_outputs(self.parameter_values(c.get("parameters", []), "parameters"))
        if self.options:
            self.data["options"] = self.options
        if self.gpu:
            self.data["resources"] = {"gpu": 1}
        self.data["description"] = "imported from Triton config.pbtxt"
        manifest = parse_manifest_dict(self.data, self.source)
        return Conversion(manifest, self.warnings)

    def runtime(self) -> tuple[str, str]:
        platform = str(self.one(self.config, "platform", "", "") or "")
        backend = str(self.one(self.config, "backend", "", "") or "")
        for key, value in (("platform", platform), ("backend", backend)):
            if value in _REFUSED_PLATFORMS:
                self.fail(key, f"{value!r}: {_REFUSED_PLATFORMS[value]}")
        if backend == "fil":
            return self.fil()
        runtime = _PLATFORMS.get(platform) or _BACKENDS.get(backend)
        if platform and platform not in _PLATFORMS:
            self.fail("platform", f"{platform!r} has no pinnace runtime")
        if backend and backend not in _BACKENDS:
            self.fail("backend", f"{backend!r} has no pinnace runtime")
        if runtime is None:
            runtime = self.guess_runtime()
        return runtime, _DEFAULT_FILES[runtime]

    def guess_runtime(self) -> str:
        names: set[str] = set()
        for version in self.model_dir.iterdir():
            if version.is_dir() and version.name.isdigit():
                names.update(p.name for p in version.iterdir())
        for runtime, filename in _DEFAULT_FILES.items():
            if filename in names:
                return runtime
        raise ManifestError(
            f"{self.source}: neither 'platform' nor 'backend' is set and no version folder holds "
            f"{', '.join(_DEFAULT_FILES.values())}"
        )

    def fil(self) -> tuple[str, str]:
        params = self.parameter_values(self.config.get("parameters", []), "parameters")
        model_type = params.get("model_type", "xgboost")
        if model_type not in _FIL_TYPES:
            self.fail(
                "parameters.model_type",
                f"FIL model type {model_type!r}; pinnace serves xgboost_json, xgboost_ubj and lightgbm",
            )
        return _FIL_TYPES[model_type]

    def version_policy(self, message: Any, key: str) -> None:
        if not isinstance(message, dict) or len(message) != 1:
            raise ManifestError(f"{self.source}: {key!r} needs exactly one of latest, all, specific")
        ((kind, values),) = message.items()
        body = values[-1] if values else {}
        if kind == "latest":
            self.data["version_policy"] = {"latest": int(self.one(body, "num_versions", key + ".latest.", 1))}
        elif kind == "all":
            self.data["version_policy"] = {"all": True}
        elif kind == "specific":
            self.data["version_policy"] = {"specific": [int(v) for v in body.get("versions", [])]}
        else:
            self.fail(f"{key}.{kind}", "unknown version policy")

    def tensors(self, values: list[Any], group: str, key: str, max_batch: int) -> None:
        self.data[group] = [self.tensor(v, f"{key}[{i}].", group, max_batch) for i, v in enumerate(values)]

    def tensor(self, message: Any, path: str, group: str, max_batch: int) -> dict[str, Any]:
        if not isinstance(message, dict):
            raise ManifestError(f"{self.source}: {path.rstrip('.')!r} must be a message")
        spec: dict[str, Any] = {}

        def flag(values: list[Any], key: str, refuse: str) -> None:
            if values and values[-1] is True:
                self.fail(key, refuse)

        handlers: dict[str, Callable[[list[Any], str], None]] = {
            "name": lambda v, k: spec.__setitem__("name", str(v[-1])),
            "data_type": lambda v, k: spec.__setitem__("datatype", self.datatype(v[-1], k)),
            "dims": lambda v, k: spec.__setitem__("dims", [int(self.typed(d, int, k)) for d in v]),
            "format": lambda v, k: None if v[-1] == "FORMAT_NONE" else self.warn(
                k, "an image layout hint; tensors are passed as sent"),
            "reshape": lambda v, k: self.fail(k, "tensors are passed to the model in the shape clients send"),
            "is_shape_tensor": lambda v, k: flag(v, k, "shape tensors are a TensorRT feature"),
            "is_non_linear_format_io": lambda v, k: flag(v, k, "non-linear IO formats are a TensorRT feature"),
            "allow_ragged_batch": lambda v, k: flag(v, k, "ragged batches need Triton's batch inputs"),
            "optional": lambda v, k: spec.__setitem__("optional", bool(v[-1])),
            "label_filename": lambda v, k: self.warn(k, "the classification extension is not served; "
                                                         "outputs carry raw values"),
        }
        self.visit(message, path, handlers)
        if "name" not in spec or "datatype" not in spec:
            raise ManifestError(f"{self.source}: {path.rstrip('.')!r} needs a name and a data_type")
        dims = spec.pop("dims", [])
        spec["shape"] = ([-1] if max_batch > 0 else []) + dims
        if group == "outputs":
            spec.pop("optional", None)
        return spec

    def datatype(self, value: Any, key: str) -> str:
        datatype = _DATATYPES.get(str(value))
        if datatype is None:
            raise ManifestError(f"{self.source}: {key!r}: unknown data type {value!r}")
        return datatype

    def dynamic_batching(self, message: Any, path: str, max_batch: int) -> None:
        batching = self.data["batching"]
        if max_batch == 0:
            self.warnings.append("'dynamic_batching' has no effect with max_batch_size 0")

        def queue_policy(values: list[Any], key: str) -> None:
            self.queue_policy(values[-1], key + ".", batching)

        handlers: dict[str, Callable[[list[Any], str], None]] = {
            "max_queue_delay_microseconds": lambda v, k: batching.__setitem__(
                "max_queue_delay_us", int(self.typed(v[-1], int, k))),
            "preferred_batch_size": lambda v, k: self.warn(
                k, "pinnace closes a batch when it is full or the queue delay has passed"),
            # Every request gets its own response in pinnace, so ordering is always preserved.
            "preserve_ordering": lambda v, k: None,
            "priority_levels": lambda v, k: self.warn(k, "all requests share one queue (no priorities)"),
            "default_priority_level": lambda v, k: self.warn(k, "all requests share one queue (no priorities)"),
            "priority_queue_policy": lambda v, k: self.warn(k, "all requests share one queue (no priorities)"),
            "default_queue_policy": queue_policy,
        }
        self.visit(message, path, handlers)

    def queue_policy(self, message: Any, path: str, batching: dict[str, Any]) -> None:
        def size(values: list[Any], key: str) -> None:
            value = int(self.typed(values[-1], int, key))
            if value > 0:
                batching["max_queue_size"] = value
            else:
                self.warn(key, "0 (unbounded) is not allowed; pinnace keeps its bounded default of 1024")

        def timeout(values: list[Any], key: str) -> None:
            micros = int(self.typed(values[-1], int, key))
            if micros > 0:
                batching["default_timeout_ms"] = max(1, math.ceil(micros / 1000))

        handlers: dict[str, Callable[[list[Any], str], None]] = {
            "max_queue_size": size,
            "default_timeout_microseconds": timeout,
            "allow_timeout_override": lambda v, k: None if v[-1] is True else self.warn(
                k, "requests may always ask for a timeout up to batching.max_timeout_ms"),
            "timeout_action": lambda v, k: None if v[-1] == "REJECT" else self.warn(
                k, "requests past their timeout are always rejected"),
        }
        self.visit(message, path, handlers)

    def instance_groups(self, groups: list[Any], key: str) -> None:
        total = 0
        for i, group in enumerate(groups):
            path = f"{key}[{i}]."
            count = int(self.typed(self.one(group, "count", path, 1), int, path + "count"))
            total += max(count, 1)
            kind = self.one(group, "kind", path, "KIND_AUTO")
            if kind == "KIND_GPU":
                self.gpu = True
            elif kind == "KIND_MODEL":
                self.warn(path + "kind", "KIND_MODEL: the runtime's own device choice applies")
            handlers: dict[str, Callable[[list[Any], str], None]] = {
                "count": lambda v, k: None,
                "kind": lambda v, k: None,
                "name": lambda v, k: None,
                "gpus": lambda v, k: self.warn(k, "pinnace uses one GPU per model") if len(v) > 1 else None,
                "profile": lambda v, k: self.warn(k, "TensorRT optimisation profiles do not apply"),
                "passive": lambda v, k: self.fail(k, "passive instances are not served") if v[-1] is True else None,
                "host_policy": lambda v, k: self.warn(k, "host policies do not apply"),
                "rate_limiter": lambda v, k: self.warn(k, "no rate limiter here; use the gateway's quotas"),
                "secondary_devices": lambda v, k: self.warn(k, "secondary devices (NVDLA) are not used"),
            }
            self.visit(group, path, handlers)
        self.data["instances"] = max(total, 1)
        if self.gpu:
            if self.data["runtime"] == "onnx":
                self.options.setdefault("providers", ["cuda", "cpu"])
            elif self.data["runtime"] == "torchscript":
                self.options["device"] = "cuda"
            else:
                self.warn(key, f"KIND_GPU: the {self.data['runtime']} runtime runs on CPU here")

    def optimization(self, message: Any, path: str, runtime: str) -> None:
        def accelerators(values: list[Any], key: str) -> None:
            self.accelerators(values[-1], key + ".", runtime)

        def graph(values: list[Any], key: str) -> None:
            self.warn(key, "graph optimisation levels differ between Triton backends; pinnace applies "
                           "its runtime default (options.graph_optimization for ONNX)")

        handlers: dict[str, Callable[[list[Any], str], None]] = {
            "execution_accelerators": accelerators,
            "graph": graph,
            "priority": lambda v, k: self.warn(k, "model priorities do not apply"),
            "cuda": lambda v, k: self.warn(k, "CUDA graphs and stream settings do not apply"),
            "input_pinned_memory": lambda v, k: self.warn(k, "pinned memory is not configurable"),
            "output_pinned_memory": lambda v, k: self.warn(k, "pinned memory is not configurable"),
            "gather_kernel_buffer_threshold": lambda v, k: self.warn(k, "a Triton-internal copy setting"),
            "eager_batching": lambda v, k: self.warn(k, "a Triton-internal scheduling setting"),
        }
        self.visit(message, path, handlers)

    def accelerators(self, message: Any, path: str, runtime: str) -> None:
        providers: list[Any] = []
        for side in ("gpu_execution_accelerator", "cpu_execution_accelerator"):
            for i, accel in enumerate(message.get(side, [])):
                key = f"{path}{side}[{i}]"
                name = str(self.one(accel, "name", key + ".", ""))
                if runtime != "onnx" or name not in ("tensorrt", "cuda", "openvino"):
                    self.warn(key, f"accelerator {name!r} applies only to ONNX Runtime's TensorRT/CUDA/OpenVINO")
                    continue
                params = self.parameter_map(accel.get("parameters", []), key + ".parameters")
                if name == "tensorrt":
                    options = {k: v for k, v in params.items() if k in ("trt_fp16_enable", "trt_int8_enable")}
                    if "precision_mode" in params:
                        options["trt_fp16_enable"] = str(params["precision_mode"] == "FP16").lower()
                    providers.append({"tensorrt": options} if options else "tensorrt")
                else:
                    providers.append(name)
        unknown = set(message) - {"gpu_execution_accelerator", "cpu_execution_accelerator"}
        for key in sorted(unknown):
            self.fail(path + key, "pinnace does not know this Triton setting")
        if providers:
            if "tensorrt" in providers or any(isinstance(p, dict) for p in providers):
                providers.append("cuda")
            providers.append("cpu")
            self.options["providers"] = providers

    def parameter_map(self, values: list[Any], key: str) -> dict[str, str]:
        """``parameters`` written as a map<string,string> (``key``/``value`` entries)."""
        result: dict[str, str] = {}
        for entry in values:
            if isinstance(entry, dict) and "key" in entry:
                result[str(self.one(entry, "key", key + "."))] = str(self.one(entry, "value", key + ".", ""))
        return result

    def parameter_values(self, values: list[Any], key: str) -> dict[str, str]:
        """Model ``parameters``: map<string, ModelParameter{string_value}>."""
        result: dict[str, str] = {}
        for entry in values:
            if not isinstance(entry, dict) or "key" not in entry:
                raise ManifestError(f"{self.source}: {key!r} entries need a key and a value")
            name = str(self.one(entry, "key", key + "."))
            value = self.one(entry, "value", key + ".", {})
            if isinstance(value, dict):
                value = self.one(value, "string_value", key + ".", "")
            result[name] = str(value)
        return result

    def parameters(self, values: list[Any], key: str, runtime: str) -> None:
        params = self.parameter_values(values, key)
        backend = str(self.one(self.config, "backend", "", "") or "")
        known = _RUNTIME_PARAMETERS.get("fil" if backend == "fil" else runtime, {})
        for name, value in params.items():
            target = known.get(name)
            where = f"{key}.{name}"
            if target is None:
                self.warn(where, f"not a setting pinnace maps for the {runtime} runtime")
            elif target == "":
                continue  # consumed elsewhere (the FIL model type and output mode)
            else:
                self.options[target] = _coerce(value)

    def fil_outputs(self, params: dict[str, str]) -> None:
        threshold = params.get("threshold")
        if threshold is not None and float(threshold) != 0.5:
            self.fail("parameters.threshold", "pinnace's tree classifiers decide at 0.5, as XGBoost and LightGBM do")
        proba = params.get("predict_proba", "false").lower() == "true"
        roles = {o["name"]: ("predict_proba" if proba else "predict") for o in self.data.get("outputs", [])}
        if roles:
            self.options["output_roles"] = roles

    def transaction_policy(self, message: Any, path: str) -> None:
        handlers: dict[str, Callable[[list[Any], str], None]] = {
            "decoupled": lambda v, k: self.fail(k, "decoupled (streaming) models are not served")
            if v[-1] is True else None,
        }
        self.visit(message, path, handlers)

    def response_cache(self, message: Any, key: str) -> None:
        if isinstance(message, dict) and message.get("enable", [False])[-1] is True:
            self.warn(key, "responses are not cached")

    def autocomplete(self, runtime: str, max_batch: int) -> None:
        """Triton reads missing inputs/outputs from the model; so does pinnace, where it can."""
        from pinnace.runtimes.registry import runtime_class

        version = _newest_version(self.model_dir)
        if version is None:
            raise ManifestError(f"{self.source}: no inputs/outputs and no version folder to read them from")
        try:
            signature = runtime_class(runtime).inspect(version / self.data["model_file"])
        except PinnaceError as exc:
            raise ManifestError(
                f"{self.source}: no inputs/outputs given and reading them from the model failed: {exc.message}"
            ) from exc
        if signature is None:
            raise ManifestError(
                f"{self.source}: no inputs/outputs given, and {runtime} files do not record them; add input "
                "and output to config.pbtxt"
            )
        inputs, outputs = signature
        if max_batch == 0:
            self.warnings.append("inputs/outputs were read from the model file (Triton auto-complete)")
        for group, found in (("inputs", inputs), ("outputs", outputs)):
            if group not in self.data:
                self.data[group] = [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    | ({"allow_nan": True} if t.allow_nan else {})
                    for t in found
                ]


_RUNTIME_PARAMETERS: Final[dict[str, dict[str, str]]] = {
    "onnx": {"intra_op_thread_count": "intra_op_threads", "inter_op_thread_count": "inter_op_threads"},
    "torchscript": {"INTRA_OP_THREAD_COUNT": "intra_op_threads", "INTER_OP_THREAD_COUNT": "inter_op_threads"},
    "openvino": {"NUM_STREAMS": "num_streams", "PERFORMANCE_HINT": "performance_hint",
                 "INFERENCE_NUM_THREADS": "threads"},
    "fil": {"model_type": "", "output_class": "", "predict_proba": "", "threshold": ""},
}


def _coerce(value: str) -> Any:
    return int(value) if re.fullmatch(r"-?\d+", value) else value


def _newest_version(model_dir: Path) -> Path | None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def parse_manifest_dict(data: dict[str, Any], source: str) -> Manifest:
    """Validate converted data exactly as a ``model.yaml`` would be validated."""
    import yaml

    return parse_manifest(yaml.safe_dump(data, sort_keys=False), source=source)

