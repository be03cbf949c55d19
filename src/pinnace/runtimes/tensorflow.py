"""TensorFlow SavedModels, served through one of their signatures.

A SavedModel is a folder (``saved_model.pb``, ``variables/``, ``assets/``); pinnace looks for it
at ``model.savedmodel`` in the version folder (Triton's name), or wherever ``model_file`` says.
Loading reads a graph and variables, no Python code — but a graph is a program: it can read and
write files through TensorFlow ops, so serve only SavedModels you would run yourself.

The signature (default ``serving_default``) *is* the model's contract, so at load pinnace checks
the manifest against it: every manifest input and output must exist in the signature with the
same datatype and a compatible shape, and every signature input must be in the manifest. A
mismatch fails the load with a message naming the tensor.

``options``: ``signature`` (default ``serving_default``), ``tags`` (default ``["serve"]``),
``intra_op_threads``/``inter_op_threads`` (process wide; TensorFlow accepts them only before it
first runs, so later values are logged, not applied).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest.schema import TensorSignature
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

log = logging.getLogger(__name__)

_OPTIONS: Final = ("signature", "tags", "intra_op_threads", "inter_op_threads")
_THREADS_LOCK = threading.Lock()


class TensorFlowRuntime(Runtime):
    """One signature of a loaded SavedModel."""

    format: ClassVar[str] = "tensorflow"
    platform: ClassVar[str] = "tensorflow_savedmodel"
    default_model_file: ClassVar[str] = "model.savedmodel"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: Any = None
        self._function: Any = None
        self._specs: dict[str, Any] = {}
        self._outputs = signatures_by_name(self.manifest.outputs)

    def load(self) -> None:
        options = check_options(self.manifest, self.format, _OPTIONS)
        signature = str_option(options, "signature", "serving_default")
        tags = options.get("tags", ["serve"])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ModelLoadError("options.tags must be a list of tag names")
        set_tf_threads(
            int_option(options, "intra_op_threads", None, minimum=1),
            int_option(options, "inter_op_threads", None, minimum=1),
        )
        path = self._require_file()
        self._loaded, self._function = _load_signature(path, signature, tags)
        inputs, outputs = _signature_of(self._function)
        check_against(self.manifest.inputs, inputs, "input", signature, complete=True)
        check_against(self.manifest.outputs, outputs, "output", signature, complete=False)
        self._specs = dict(self._function.structured_input_signature[1])

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        import tensorflow as tf

        feed = {}
        for name, spec in self._specs.items():
            if name not in inputs:
                raise InvalidInputError(f"missing input {name!r}")
            array = inputs[name]
            if spec.dtype != tf.string:
                array = np.asarray(array, dtype=spec.dtype.as_numpy_dtype)
            feed[name] = tf.constant(array, dtype=spec.dtype)
        try:
            result = self._function(**feed)
        except Exception as exc:  # tf.errors.InvalidArgumentError and friends
            raise InvalidInputError(f"the model rejected the input: {clean_error(exc)}") from exc
        wanted = list(outputs) or list(result)
        missing = [n for n in wanted if n not in result]
        if missing:
            raise InvalidInputError(f"the signature has no output {missing[0]!r}")
        return {n: fit_output(np.asarray(result[n].numpy()), self._outputs.get(n)) for n in wanted}

    def unload(self) -> None:
        self._function = None
        self._loaded = None

    def metadata_parameters(self) -> dict[str, Any]:
        return {"signature": str(self.manifest.options.get("signature", "serving_default"))}

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        _, function = _load_signature(path, "serving_default", ["serve"])
        return _signature_of(function)


def set_tf_threads(intra: int | None, inter: int | None) -> None:
    """Size TensorFlow's thread pools if it has not started yet; say so when it has."""
    if intra is None and inter is None:
        return
    _quiet_tensorflow()
    import tensorflow as tf

    threading_config = tf.config.threading
    with _THREADS_LOCK:
        for value, getter, setter, key in (
            (intra, threading_config.get_intra_op_parallelism_threads,
             threading_config.set_intra_op_parallelism_threads, "intra_op_threads"),
            (inter, threading_config.get_inter_op_parallelism_threads,
             threading_config.set_inter_op_parallelism_threads, "inter_op_threads"),
        ):
            if value is None or getter() == value:
                continue
            try:
                setter(value)
            except RuntimeError:
                log.warning(
                    "options.%s=%d not applied: TensorFlow already runs in this process with "
                    "its thread pools sized", key, value,
                )


def check_against(
    declared: Sequence[TensorSignature],
    actual: Sequence[TensorSignature],
    group: str,
    signature: str,
    *,
    complete: bool,
) -> None:
    """Refuse a manifest that disagrees with the model's own signature, naming the tensor."""
    by_name = {t.name: t for t in actual}
    for mine in declared:
        theirs = by_name.get(mine.name)
        if theirs is None:
            raise ModelLoadError(
                f"{group} {mine.name!r} is not in signature {signature!r}; it has "
                f"{', '.join(sorted(by_name)) or 'none'}"
            )
        if mine.datatype != theirs.datatype:
            raise ModelLoadError(
                f"{group} {mine.name!r} is {mine.datatype} in the manifest but {theirs.datatype} "
                f"in signature {signature!r}"
            )
        if not _compatible(mine.shape, theirs.shape):
            raise ModelLoadError(
                f"{group} {mine.name!r} has shape {mine.shape} in the manifest but {theirs.shape} "
                f"in signature {signature!r}"
            )
    if complete and declared:
        named = {t.name for t in declared}
        absent = [n for n in by_name if n not in named]
        if absent:
            raise ModelLoadError(f"signature {signature!r} needs {group} {absent[0]!r}, which the manifest lacks")


def _compatible(mine: Sequence[int], theirs: Sequence[int]) -> bool:
    if len(theirs) == 0 and len(mine) == 0:
        return True
    if len(mine) != len(theirs):
        return False
    # -1 on either side is a free dimension; the manifest may pin what the model leaves open.
    return all(a == b or -1 in (a, b) for a, b in zip(mine, theirs, strict=True))


def _load_signature(path: Path, signature: str, tags: list[str]) -> tuple[Any, Any]:
    if not path.is_dir():
        raise ModelLoadError(f"{path.name!r} is not a SavedModel folder")
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path.name!r} has no saved_model.pb; is it a SavedModel?")
    _quiet_tensorflow()
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path), tags=tags)
    except Exception as exc:
        raise ModelLoadError(
            f"tensorflow could not load {path.name!r} (corrupt or truncated?): {clean_error(exc)}"
        ) from exc
    signatures = getattr(loaded, "signatures", {})
    if signature not in signatures:
        raise ModelLoadError(
            f"{path.name!r} has no signature {signature!r}; it has {', '.join(sorted(signatures)) or 'none'}"
        )
    return loaded, signatures[signature]


def _signature_of(function: Any) -> tuple[list[TensorSignature], list[TensorSignature]]:
    _, kwargs = function.structured_input_signature
    inputs = [_tensor_signature(name, spec) for name, spec in sorted(kwargs.items())]
    outputs = [_tensor_signature(name, spec) for name, spec in sorted(function.structured_outputs.items())]
    return inputs, outputs


def _tensor_signature(name: str, spec: Any) -> TensorSignature:
    datatype = datatype_of_name(spec.dtype.name)
    if datatype is None:
        raise ModelLoadError(f"tensor {name!r} has dtype {spec.dtype.name}, which V2 cannot carry")
    dims = spec.shape.as_list() if spec.shape.rank is not None else []
    return TensorSignature(name=name, datatype=datatype, shape=[d if d is not None else -1 for d in dims])


def _quiet_tensorflow() -> None:
    # TensorFlow's C++ logging writes INFO lines straight to stderr, around our structured log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
