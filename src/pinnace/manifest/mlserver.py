"""MLServer model settings (``model-settings.json``) read as pinnace manifests.

An MLServer model folder keeps its artifact beside ``model-settings.json`` (no version
folders), so the manifest says ``unversioned: true`` and the folder is served as version 1.
Served unchanged, it behaves as MLServer does for existing clients:

- ``implementation`` → ``runtime``: ``mlserver_sklearn.SKLearnModel`` → sklearn,
  ``mlserver_xgboost.XGBoostModel`` → xgboost, ``mlserver_lightgbm.LightGBMModel`` → lightgbm.
  Any other implementation (custom Python classes, MLflow, Hugging Face, …) is refused,
  naming the key.
- ``parameters.uri`` → ``model_file`` (relative to the folder; paths leaving it are refused).
  Without it, MLServer's well-known file names are tried.
- ``inputs``/``outputs`` are kept when given. When inputs are absent, requests are not checked
  against a signature — MLServer's runtimes take any single input, so existing clients keep
  working; outputs are then those MLServer returns: ``predict`` and ``predict_proba`` for
  XGBoost classifiers, ``predict`` for regressors, and for LightGBM ``predict`` as the booster's
  own output (probabilities for classifiers), exactly as ``mlserver_lightgbm`` answers.
- ``max_batch_size``/``max_batch_time`` (adaptive batching) → ``batching``.
- ``parameters.version`` is reported: pinnace versions are numbers, so the model is version 1.

**scikit-learn and trust.** MLServer loads joblib/pickle files, which run code when loaded.
pinnace never loads such a file without ``trusted: true`` and a recorded sha256 — which an
unchanged MLServer folder cannot have. So an unconverted sklearn model does not load; its
reason tells the user to review the artifact and run ``pinnace init --from mlserver SRC --repo
DEST --trusted``, which records the hashes and the trust in ``model.yaml``. XGBoost and
LightGBM files are data, and serve unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any, Final

from pinnace.errors import ManifestError, PinnaceError
from pinnace.manifest.schema import Manifest
from pinnace.manifest.triton import Conversion, parse_manifest_dict

log = logging.getLogger(__name__)

SETTINGS_FILE: Final = "model-settings.json"

IMPLEMENTATIONS: Final = {
    "mlserver_sklearn.SKLearnModel": "sklearn",
    "mlserver_xgboost.XGBoostModel": "xgboost",
    "mlserver_lightgbm.LightGBMModel": "lightgbm",
}
# MLServer's well-known artifact names per runtime, in its own search order.
WELL_KNOWN: Final = {
    "sklearn": ("model.joblib", "model.pickle", "model.pkl"),
    "xgboost": ("model.bst", "model.json", "model.ubj"),
    "lightgbm": ("model.bst",),
}
_KNOWN_KEYS: Final = {
    "name", "implementation", "parameters", "inputs", "outputs", "max_batch_size", "max_batch_time",
    "platform", "versions", "parallel_workers", "warm_workers", "cache_enabled",
}
_PARAMETER_KEYS: Final = {"uri", "version", "format", "content_type", "extra", "environment_tarball",
                          "environment_path", "inference_pool_gid", "autogenerate_inference_pool_gid"}


def manifest_from_mlserver(model_dir: Path) -> Manifest:
    """The manifest for an MLServer model folder, served unchanged (see the module docstring)."""
    conversion = convert_mlserver(model_dir, trusted=False)
    if conversion.manifest.runtime == "sklearn":
        raise ManifestError(
            f"{model_dir.name}/{SETTINGS_FILE}: scikit-learn artifacts run code when loaded, and an "
            "unconverted MLServer folder records no sha256 for them; review the artifact, then run "
            "'pinnace init --from mlserver SRC --repo DEST --trusted' to serve it"
        )
    for warning in conversion.warnings:
        log.warning("%s/%s: %s", model_dir.name, SETTINGS_FILE, warning)
    return conversion.manifest


def convert_mlserver(model_dir: Path, *, trusted: bool, name: str | None = None) -> Conversion:
    """Convert ``model_dir/model-settings.json``; ``trusted`` allows reading sklearn signatures."""
    source = f"{model_dir.name}/{SETTINGS_FILE}"
    try:
        settings = json.loads((model_dir / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{source}: cannot be read") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(settings, dict):
        raise ManifestError(f"{source}: expected a JSON object")
    return _Converter(model_dir, settings, source, name or model_dir.name, trusted).convert()


class _Converter:
    def __init__(self, model_dir: Path, settings: dict[str, Any], source: str, name: str, trusted: bool) -> None:
        self.model_dir = model_dir
        self.settings = settings
        self.source = source
        self.name = name
        self.trusted = trusted
        self.warnings: list[str] = []

    def fail(self, key: str, why: str) -> None:
        raise ManifestError(f"{self.source}: {key!r} is not supported: {why}")

    def warn(self, key: str, why: str) -> None:
        self.warnings.append(f"{key!r} not carried over: {why}")

    def convert(self) -> Conversion:
        s = self.settings
        for key in sorted(set(s) - _KNOWN_KEYS):
            self.fail(key, "pinnace does not know this MLServer setting")
        implementation = s.get("implementation")
        runtime = IMPLEMENTATIONS.get(str(implementation))
        if runtime is None:
            self.fail(
                "implementation",
                f"{implementation!r}; pinnace serves {', '.join(sorted(IMPLEMENTATIONS))} (custom Python models "
                "become runtime: python models)",
            )
        assert runtime is not None
        declared = s.get("name")
        if declared and declared != self.name:
            self.warnings.append(f"'name' {declared!r} differs from the folder; the model is served as {self.name!r}")
        params = s.get("parameters") or {}
        if not isinstance(params, dict):
            raise ManifestError(f"{self.source}: 'parameters' must be an object")
        model_file = self.model_file(runtime, params)
        self.parameters(params)
        data: dict[str, Any] = {
            "name": self.name,
            "runtime": runtime,
            "description": "imported from MLServer model-settings.json",
            "model_file": model_file,
            "unversioned": True,
        }
        batching = self.batching()
        if batching:
            data["batching"] = batching
        data.update(self.signature(runtime, model_file, bool(batching)))
        for key, why in (
            ("parallel_workers", "pinnace runs models in threads; set instances in model.yaml"),
            ("warm_workers", "pinnace warms every model up before it turns ready"),
            ("cache_enabled", "responses are not cached"),
        ):
            if s.get(key):
                self.warn(key, why)
        return Conversion(parse_manifest_dict(data, self.source), self.warnings)

    def model_file(self, runtime: str, params: dict[str, Any]) -> str:
        uri = params.get("uri")
        if uri is None:
            for candidate in WELL_KNOWN[runtime]:
                if (self.model_dir / candidate).is_file():
                    return candidate
            raise ManifestError(
                f"{self.source}: no 'parameters.uri' and none of {', '.join(WELL_KNOWN[runtime])} in the folder"
            )
        if not isinstance(uri, str) or not uri:
            raise ManifestError(f"{self.source}: 'parameters.uri' must be a file name")
        relative = PurePosixPath(uri)
        parts = [p for p in relative.parts if p != "."]
        if relative.is_absolute() or ".." in parts or "://" in uri or not parts:
            self.fail("parameters.uri", f"{uri!r}: artifacts must lie inside the model folder")
        path = self.model_dir.joinpath(*parts)
        if not path.exists():
            raise ManifestError(f"{self.source}: 'parameters.uri' names {'/'.join(parts)!r}, which is missing")
        return "/".join(parts)

    def parameters(self, params: dict[str, Any]) -> None:
        for key in sorted(set(params) - _PARAMETER_KEYS):
            self.fail(f"parameters.{key}", "pinnace does not know this MLServer setting")
        if params.get("environment_tarball") or params.get("environment_path"):
            which = "environment_tarball" if params.get("environment_tarball") else "environment_path"
            self.fail(f"parameters.{which}", "custom Python environments are not unpacked")
        if params.get("version") is not None:
            self.warnings.append(
                f"'parameters.version' {params['version']!r} is served as version 1 (pinnace versions are numbers); "
                "clients addressing /versions/<name> must use 1"
            )
        if params.get("content_type") not in (None, "np", "nd"):
            self.warn("parameters.content_type", f"{params['content_type']!r}: inputs reach the model as numpy arrays")
        if params.get("extra"):
            self.warn("parameters.extra", "runtime-specific MLServer settings have no pinnace equivalent")
        if params.get("format"):
            self.warn("parameters.format", "the format follows from the runtime and the file")
        for key in ("inference_pool_gid", "autogenerate_inference_pool_gid"):
            if params.get(key):
                self.warn(f"parameters.{key}", "inference pools do not apply; models run in threads")

    def batching(self) -> dict[str, Any]:
        size = self.settings.get("max_batch_size", 0) or 0
        delay = self.settings.get("max_batch_time", 0) or 0
        if not isinstance(size, int) or not isinstance(delay, int | float):
            raise ManifestError(f"{self.source}: 'max_batch_size'/'max_batch_time' must be numbers")
        if size <= 1:
            return {}
        # MLServer counts requests per batch, pinnace counts rows; a request of one row each is
        # the common case, where both agree.
        return {"max_batch_size": size, "max_queue_delay_us": round(delay * 1_000_000)}

    def signature(self, runtime: str, model_file: str, batched: bool) -> dict[str, Any]:
        inputs = [self.tensor(t, f"inputs[{i}]", batched) for i, t in enumerate(self.settings.get("inputs") or [])]
        outputs = [self.tensor(t, f"outputs[{i}]", batched) for i, t in enumerate(self.settings.get("outputs") or [])]
        result: dict[str, Any] = {}
        if inputs:
            result["inputs"] = inputs
        else:
            self.warnings.append(
                "no inputs declared: any single input is accepted, as MLServer does (declare inputs in model.yaml "
                "to have requests checked)"
            )
        if outputs:
            result["outputs"] = outputs
            if runtime == "lightgbm":
                result["options"] = {"output_roles": {o["name"]: "raw" for o in outputs if o["name"] == "predict"}}
            return result
        found = self.default_outputs(runtime, self.model_dir / model_file)
        if found is not None:
            result["outputs"], options = found
            if options:
                result["options"] = options
        return result

    def default_outputs(self, runtime: str, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """The outputs MLServer's runtime returns, read from the model file where that is safe."""
        if runtime == "sklearn" and not self.trusted:
            return None  # reading the signature would unpickle the file
        from pinnace.runtimes.registry import runtime_class

        try:
            signature = runtime_class(runtime).inspect(path)
        except PinnaceError as exc:
            raise ManifestError(f"{self.source}: the model file could not be read: {exc.message}") from exc
        if signature is None:
            return None
        outputs = [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in signature[1]]
        if runtime != "lightgbm":
            return outputs, {}
        # mlserver_lightgbm answers "predict" with Booster.predict: probabilities for classifiers.
        proba = next((o for o in outputs if o["name"] == "predict_proba"), None)
        raw = dict(proba or outputs[0], name="predict")
        if proba is not None and raw["shape"][-1] == 2:
            raw["shape"] = [-1]  # binary: the probability of class 1 only
        return [raw], {"output_roles": {"predict": "raw"}}

    def tensor(self, spec: Any, key: str, batched: bool) -> dict[str, Any]:
        if not isinstance(spec, dict) or "name" not in spec or "datatype" not in spec or "shape" not in spec:
            raise ManifestError(f"{self.source}: {key!r} needs name, datatype and shape")
        for extra in sorted(set(spec) - {"name", "datatype", "shape", "parameters"}):
            self.fail(f"{key}.{extra}", "pinnace does not know this MLServer setting")
        parameters = spec.get("parameters") or {}
        if isinstance(parameters, dict) and parameters.get("content_type") not in (None, "np", "nd"):
            self.warn(f"{key}.parameters.content_type", "inputs reach the model as numpy arrays")
        shape = [int(d) for d in spec["shape"]]
        if batched and shape and shape[0] != -1:
            shape[0] = -1  # batching needs a free leading dimension
        return {"name": str(spec["name"]), "datatype": str(spec["datatype"]), "shape": shape}
