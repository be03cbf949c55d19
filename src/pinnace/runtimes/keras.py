"""Keras 3 models: the native ``.keras`` archive and the legacy HDF5 ``.h5`` file.

**Backend.** Keras 3 runs on TensorFlow, PyTorch or JAX and fixes its backend when ``keras`` is
first imported, from ``KERAS_BACKEND``. pinnace picks it when the first Keras model loads (never
at import time): ``options.backend`` if given, else ``KERAS_BACKEND`` from the environment,
else ``tensorflow`` — whose ``tensorflow-cpu`` wheel (the ``pinnace[keras]`` extra) brings no GPU
stack. Every Keras model in one server process shares that backend; a model asking for another
one fails to load with a message saying so.

**Trust.** Both formats hold a model *configuration* rebuilt by Keras, which is safe — except for
``Lambda`` layers, whose Python code only runs with ``safe_mode=False``. pinnace loads with
``safe_mode=True`` unless the manifest says ``trusted: true``, in which case every artifact
must have a matching sha256 (the rule for pickles); an untrusted model with a Lambda layer fails
to load with a message saying so.

Inputs are matched by the names of the model's ``Input`` layers; outputs are named by the
model's output names (``output_names``, or the keys of a dict output; ``output_0`` … otherwise).

``options``: ``backend``; ``intra_op_threads``/``inter_op_threads`` (TensorFlow backend; process
wide, applied only before TensorFlow first runs).
"""

from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest.schema import Manifest, TensorSignature
from pinnace.protocol.datatypes import datatype_of_name
from pinnace.runtimes._support import (
    check_options,
    clean_error,
    fit_output,
    int_option,
    signatures_by_name,
    str_option,
)
from pinnace.runtimes.base import Arrays, Runtime

_OPTIONS: Final = ("backend", "intra_op_threads", "inter_op_threads")
_BACKENDS: Final = ("tensorflow", "torch", "jax", "numpy")
_DEFAULT_BACKEND: Final = "tensorflow"
_HDF5_MAGIC: Final = b"\x89HDF\r\n\x1a\n"
_CANDIDATES: Final = ("model.keras", "model.h5")


class KerasRuntime(Runtime):
    """A loaded ``keras.Model``."""

    format: ClassVar[str] = "keras"
    platform: ClassVar[str] = "keras"
    default_model_file: ClassVar[str] = "model.keras"
    model_file_candidates: ClassVar[tuple[str, ...]] = _CANDIDATES

    @classmethod
    def runs_code(cls, manifest: Manifest) -> bool:
        # Trusted models load with safe_mode off (Lambda layers), so they need every hash.
        return manifest.trusted

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model: Any = None
        self._call: Any = None
        self._backend = ""
        self._input_names: list[str] = []
        self._input_dtypes: list[str] = []
        self._outputs = signatures_by_name(self.manifest.outputs)

    def load(self) -> None:
        options = check_options(self.manifest, self.format, _OPTIONS)
        requested = options.get("backend")
        if requested is not None:
            requested = str_option(options, "backend", _DEFAULT_BACKEND, _BACKENDS)
        self._backend = select_backend(requested)
        path = self._require_file()
        # Trusted models (hash-checked by the repository's gate, see runs_code) may hold Lambda
        # layers, which only load with safe_mode off.
        safe_mode = not self.manifest.trusted
        if self._backend == "tensorflow":
            from pinnace.runtimes.tensorflow import set_tf_threads

            set_tf_threads(
                int_option(options, "intra_op_threads", None, minimum=1),
                int_option(options, "inter_op_threads", None, minimum=1),
            )
        self._model = read_model(path, safe_mode=safe_mode)
        self._input_names = [t.name for t in self._model.inputs]
        self._input_dtypes = [str(t.dtype) for t in self._model.inputs]
        self._call = _compiled_call(self._model, self._backend)

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        args = []
        for name, dtype in zip(self._input_names, self._input_dtypes, strict=True):
            if name in inputs:
                array = inputs[name]
            elif len(self._input_names) == 1 and len(inputs) == 1:
                # One input either way: the manifest's name (checked by the data plane) wins over
                # the name Keras generated for an unnamed Input.
                (array,) = inputs.values()
            else:
                raise InvalidInputError(f"missing input {name!r}")
            args.append(np.asarray(array, dtype=dtype if dtype != "string" else object))
        try:
            result = self._call(args)
        except Exception as exc:  # backend errors (InvalidArgumentError, RuntimeError, …)
            raise InvalidInputError(f"the model rejected the input: {clean_error(exc)}") from exc
        produced = _named_outputs(self._model, result)
        wanted = list(outputs) or list(produced)
        missing = [n for n in wanted if n not in produced]
        if missing:
            raise InvalidInputError(f"the model has no output {missing[0]!r}; it has {', '.join(produced)}")
        return {n: fit_output(_to_numpy(produced[n]), self._outputs.get(n)) for n in wanted}

    def unload(self) -> None:
        self._model = None
        self._call = None

    def metadata_parameters(self) -> dict[str, Any]:
        return {"keras_backend": self._backend} if self._backend else {}

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        select_backend(None)
        model = read_model(path, safe_mode=True)
        inputs = [_signature(t.name, t) for t in model.inputs]
        outputs = [_signature(name, t) for name, t in _output_tensors(model).items()]
        return inputs, outputs


def select_backend(requested: str | None) -> str:
    """Fix Keras' backend before Keras is imported, or check the one already in use."""
    if "keras" in sys.modules:
        import keras

        active = str(keras.backend.backend())
        if requested is not None and requested != active:
            raise ModelLoadError(
                f"options.backend is {requested!r} but Keras already runs on {active!r} in this "
                "server; every Keras model in one process shares one backend"
            )
        return active
    chosen = requested or os.environ.get("KERAS_BACKEND") or _DEFAULT_BACKEND
    if chosen not in _BACKENDS:
        raise ModelLoadError(f"KERAS_BACKEND {chosen!r} is not one of {', '.join(_BACKENDS)}")
    # Keras reads this once, at its first import, which is about to happen.
    os.environ["KERAS_BACKEND"] = chosen
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return chosen


def read_model(path: Path, *, safe_mode: bool) -> Any:
    """``keras.saving.load_model`` with the format checked first and errors made plain."""
    _check_container(path)
    try:
        import keras
    except ImportError as exc:  # the backend's framework (KERAS_BACKEND) is missing
        raise ModelLoadError(
            f"keras could not start with backend {os.environ.get('KERAS_BACKEND')!r}: {clean_error(exc)}"
        ) from exc
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=safe_mode)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe deserialization" in text.lower():
            raise ModelLoadError(
                f"{path.name!r} holds a layer whose Python code would run on load (e.g. a Lambda "
                "layer); it loads only when the manifest says 'trusted: true' and hashes every "
                "artifact (pinnace init --trusted)"
            ) from exc
        raise ModelLoadError(f"keras could not load {path.name!r}: {clean_error(exc)}") from exc


def _check_container(path: Path) -> None:
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelLoadError(f"{path.name!r} is not a .keras archive (corrupt or truncated?)")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                names = set(archive.namelist())
        except Exception as exc:  # zipfile raises several types on damaged archives
            raise ModelLoadError(f"{path.name!r} is a damaged .keras archive: {clean_error(exc)}") from exc
        if bad is not None:
            raise ModelLoadError(f"{path.name!r} is a damaged .keras archive ({bad} fails its checksum)")
        if "config.json" not in names:
            raise ModelLoadError(f"{path.name!r} is not a Keras 3 archive (no config.json)")
    elif path.suffix in (".h5", ".hdf5"):
        with path.open("rb") as fh:
            if fh.read(len(_HDF5_MAGIC)) != _HDF5_MAGIC:
                raise ModelLoadError(f"{path.name!r} is not an HDF5 file (corrupt or truncated?)")
    else:
        raise ModelLoadError(f"{path.name!r}: Keras models are .keras archives or legacy .h5 files")


def _compiled_call(model: Any, backend: str) -> Any:
    """A callable taking the input arrays in ``model.inputs`` order and returning the outputs."""
    structure = _input_structure(model)
    if backend != "tensorflow":
        return lambda arrays: model(structure(arrays), training=False)
    import tensorflow as tf

    specs = [tf.TensorSpec(shape=t.shape, dtype=t.dtype) for t in model.inputs]

    # One traced graph for every batch size: input_signature keeps the batch dimension open, so
    # requests never retrace (Model.predict_on_batch retraces for each new batch size).
    @tf.function(input_signature=specs, autograph=False, reduce_retracing=True)  # type: ignore[untyped-decorator]
    def serve(*tensors: Any) -> Any:
        return model(structure(list(tensors)), training=False)

    return lambda arrays: serve(*arrays)


def _input_structure(model: Any) -> Any:
    """How the flat input list is packed for ``model(...)``: one tensor, a list or a dict."""
    names = [t.name for t in model.inputs]
    if len(names) == 1:
        return lambda flat: flat[0]
    try:
        declared = model.input
    except (AttributeError, ValueError):
        declared = None
    if isinstance(declared, dict):
        keys = {t.name: key for key, t in declared.items()}
        return lambda flat: {keys[n]: x for n, x in zip(names, flat, strict=True)}
    return list


def _output_tensors(model: Any) -> dict[str, Any]:
    """Output name → symbolic output tensor, named the way :func:`_named_outputs` names results."""
    try:
        declared = model.output
    except (AttributeError, ValueError):
        declared = None
    if isinstance(declared, dict):
        return dict(declared)
    tensors = list(model.outputs)
    return dict(zip(_positional_names(model, len(tensors)), tensors, strict=True))


def _named_outputs(model: Any, result: Any) -> dict[str, Any]:
    if isinstance(result, dict):
        return {str(k): v for k, v in result.items()}
    values = list(result) if isinstance(result, list | tuple) else [result]
    return dict(zip(_positional_names(model, len(values)), values, strict=True))


def _positional_names(model: Any, count: int) -> list[str]:
    names = getattr(model, "output_names", None)
    if isinstance(names, list | tuple) and len(names) == count and all(isinstance(n, str) for n in names):
        return list(names)
    return [f"output_{i}" for i in range(count)]


def _signature(name: str, tensor: Any) -> TensorSignature:
    dtype = str(tensor.dtype)
    datatype = datatype_of_name(dtype)
    if datatype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {dtype}, which V2 cannot carry")
    shape = [d if isinstance(d, int) and d > 0 else -1 for d in tensor.shape]
    return TensorSignature(name=name, datatype=datatype, shape=shape)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy") and not hasattr(value, "detach"):
        return np.asarray(value.numpy())  # TensorFlow tensors
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())  # torch tensors
    return np.asarray(value)
