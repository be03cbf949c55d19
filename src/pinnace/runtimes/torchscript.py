"""PyTorch models as TorchScript archives (``torch.jit.script``/``trace`` then ``.save``).

A TorchScript archive holds TorchScript code and tensors, which ``torch.jit.load`` reads without
unpickling arbitrary Python objects. A *full pickle* (``torch.save(model)``) is different: it
can only be read with ``torch.load(weights_only=False)``, which runs whatever code the file
names. Such files load only with ``options.load: pickle`` and the same trust gate as any
pickle (``trusted: true`` and a matching sha256 for every artifact).

Inputs are passed to ``forward`` positionally in manifest order (Triton-style names such as
``INPUT__0``, ``INPUT__1`` are ordered by their index). Outputs come from what ``forward``
returns: one tensor, a tuple/list (by position, or by ``OUTPUT__k`` index), or a dict (by name).

``options``:
``intra_op_threads`` (default 1) and ``inter_op_threads`` — torch's thread pools are
process-wide, so the last model loaded sets them (the inter-op pool can be sized only before
torch first uses it; later requests are reported in the log, not applied);
``device`` (``cpu`` default, or ``cuda``/``cuda:N`` — falls back to CPU when CUDA is absent, and
says so in model metadata); ``load`` (``torchscript`` default, or ``pickle``).

TorchScript is deprecated upstream in favour of ``torch.export``; it is what most PyTorch
models in serving repositories (Triton's ``pytorch_libtorch``) are saved as, so it is served,
with torch's deprecation notice silenced at load.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest.schema import Manifest
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

_OPTIONS: Final = ("intra_op_threads", "inter_op_threads", "device", "load")
_INDEXED: Final = re.compile(r"^.*__(\d+)$")
_THREADS_LOCK = threading.Lock()


class TorchScriptRuntime(Runtime):
    """A loaded ``torch.jit.ScriptModule`` (or, trusted only, a pickled ``nn.Module``)."""

    format: ClassVar[str] = "torchscript"
    platform: ClassVar[str] = "pytorch_libtorch"
    default_model_file: ClassVar[str] = "model.pt"

    @classmethod
    def runs_code(cls, manifest: Manifest) -> bool:
        # torch.jit.load parses a program, not a pickle; options.load: pickle is torch.load.
        return manifest.options.get("load") == "pickle"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._module: Any = None
        self._device = "cpu"
        self._device_note = ""
        self._input_order = _by_index([i.name for i in self.manifest.inputs])
        self._output_order = _by_index([o.name for o in self.manifest.outputs])
        self._outputs = signatures_by_name(self.manifest.outputs)

    def load(self) -> None:
        import torch

        options = check_options(self.manifest, self.format, _OPTIONS)
        mode = str_option(options, "load", "torchscript", ("torchscript", "pickle"))
        _set_threads(torch, int_option(options, "intra_op_threads", 1, minimum=1),
                     int_option(options, "inter_op_threads", None, minimum=1))
        self._device, self._device_note = _pick_device(torch, str_option(options, "device", "cpu"))
        path = self._require_file()
        # Full pickles were admitted by the repository's trust gate (see runs_code).
        module = _load_pickle(torch, path) if mode == "pickle" else _load_torchscript(torch, path)
        self._module = module.to(self._device).eval()

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        import torch

        names = self._input_order or sorted(inputs)
        args = [_tensor(torch, inputs[n]).to(self._device) for n in names if n in inputs]
        try:
            with torch.inference_mode():
                result = self._module(*args)
        except Exception as exc:  # TorchScript raises RuntimeError with its interpreter trace
            raise InvalidInputError(f"the model rejected the input: {clean_error(exc)}") from exc
        produced = self._name_outputs(result)
        wanted = list(outputs) or list(produced)
        missing = [n for n in wanted if n not in produced]
        if missing:
            raise InvalidInputError(f"the model did not produce output {missing[0]!r}")
        return {n: fit_output(produced[n], self._outputs.get(n)) for n in wanted}

    def _name_outputs(self, result: Any) -> Arrays:
        if isinstance(result, dict):
            return {str(k): _to_numpy(v) for k, v in result.items()}
        values = list(result) if isinstance(result, tuple | list) else [result]
        names = self._output_order or [f"output__{i}" for i in range(len(values))]
        if len(values) < len(names):
            raise InvalidInputError(f"the model returned {len(values)} outputs; the manifest names {len(names)}")
        return {name: _to_numpy(value) for name, value in zip(names, values, strict=False)}

    def unload(self) -> None:
        self._module = None

    def metadata_parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {"device": self._device}
        if self._device_note:
            params["device_note"] = self._device_note
        return params


def _load_torchscript(torch: Any, path: Path) -> Any:
    kind = _archive_kind(path)
    if kind == "pickle":
        raise ModelLoadError(
            f"{path.name!r} was saved with torch.save(model), not as TorchScript; export it with "
            "torch.jit.script/trace and .save(), or (trusted models only) set options.load: pickle"
        )
    if kind != "torchscript":
        raise ModelLoadError(f"{path.name!r} is not a TorchScript archive (corrupt or truncated?)")
    try:
        with warnings.catch_warnings():
            # torch 2.9+ warns that TorchScript is deprecated on every load; see module docstring.
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelLoadError(f"torch could not load {path.name!r}: {clean_error(exc)}") from exc


def _load_pickle(torch: Any, path: Path) -> Any:
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(f"torch could not unpickle {path.name!r}: {clean_error(exc)}") from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"{path.name!r} holds a {type(module).__name__}, not a model (a state_dict needs its "
            "model class: export the model as TorchScript or ONNX instead)"
        )
    return module


def _archive_kind(path: Path) -> str:
    """``torchscript``, ``pickle`` (a torch.save zip) or ``unknown``, from the zip's listing."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # zipfile raises several types on damaged archives (NotImplementedError too)
        return "unknown"
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/data.pkl") for n in names):
        return "pickle"
    return "unknown"


def _set_threads(torch: Any, intra: int | None, inter: int | None) -> None:
    with _THREADS_LOCK:
        if intra is not None and torch.get_num_threads() != intra:
            torch.set_num_threads(intra)
        if inter is not None and torch.get_num_interop_threads() != inter:
            try:
                torch.set_num_interop_threads(inter)
            except RuntimeError:
                log.warning(
                    "options.inter_op_threads=%d not applied: torch's inter-op pool is already "
                    "running with %d threads in this process", inter, torch.get_num_interop_threads()
                )


def _pick_device(torch: Any, wanted: str) -> tuple[str, str]:
    if wanted == "cpu":
        return "cpu", ""
    if not re.fullmatch(r"cuda(:\d+)?", wanted):
        raise ModelLoadError("options.device must be cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        return "cpu", f"{wanted} requested but CUDA is not available; running on CPU"
    index = int(wanted.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        return "cpu", f"{wanted} requested but only {torch.cuda.device_count()} CUDA devices exist; running on CPU"
    return wanted, ""


def _by_index(names: list[str]) -> list[str]:
    # Triton's PyTorch backend binds INPUT__0, INPUT__1 … by the number after "__".
    if names and all(_INDEXED.match(n) for n in names):
        return sorted(names, key=lambda n: int(_INDEXED.match(n).group(1)))  # type: ignore[union-attr]
    return names


def _tensor(torch: Any, array: np.ndarray) -> Any:
    if array.dtype == object:
        raise InvalidInputError("TorchScript models take numeric tensors, not BYTES")
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:
        # torch shares memory with the array and warns about read-only buffers; copy those.
        array = array.copy()
    return torch.from_numpy(array)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)
