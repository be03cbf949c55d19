"""scikit-learn estimators saved with joblib or pickle. Loading unpickles, so it runs code:
the repository admits it only for trusted manifests whose hashes match."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes.base import Arrays, Runtime

PREDICT_OUTPUT = "predict"
PROBA_OUTPUT = "predict_proba"


class SklearnRuntime(Runtime):
    """Outputs: ``predict`` (``estimator.predict``) and, for classifiers, ``predict_proba``.

    The single input is the feature matrix; its name comes from the manifest (``input`` when
    ``pinnace init`` writes it). Manifest output names map to methods through their names.
    """

    format: ClassVar[str] = "sklearn"
    platform: ClassVar[str] = "sklearn"
    default_model_file: ClassVar[str] = "model.joblib"
    runs_code_on_load: ClassVar[bool] = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._estimator: Any = None

    def load(self) -> None:
        path = self._require_file()
        self._estimator = _unpickle(path)
        if not hasattr(self._estimator, "predict"):
            raise ModelLoadError(f"{path.name!r} holds no estimator with a predict method")

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        (features,) = inputs.values()
        result: Arrays = {}
        for name in outputs:
            method = getattr(self._estimator, name, None)
            if method is None:
                raise InvalidInputError(f"this estimator has no {name!r} output")
            result[name] = np.asarray(method(features))
        return result

    def unload(self) -> None:
        self._estimator = None

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        estimator = _unpickle(path)
        n_features = getattr(estimator, "n_features_in_", None)
        width = int(n_features) if n_features is not None else -1
        inputs = [TensorSignature(name="input", datatype="FP64", shape=[-1, width])]
        label_type = _label_datatype(estimator)
        outputs = [TensorSignature(name=PREDICT_OUTPUT, datatype=label_type, shape=[-1])]
        if hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_"):
            n_classes = len(estimator.classes_)
            outputs.append(
                TensorSignature(name=PROBA_OUTPUT, datatype="FP64", shape=[-1, n_classes])
            )
        return inputs, outputs


def _unpickle(path: Path) -> Any:
    try:
        if path.suffix in (".pkl", ".pickle"):
            with path.open("rb") as fh:
                # Trust and hashes were checked by the repository before we got here.
                return pickle.load(fh)
        import joblib

        return joblib.load(path)
    except ImportError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"{path.name!r} could not be unpickled: {type(exc).__name__}") from exc


def _label_datatype(estimator: Any) -> str:
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        return "FP64"
    kind = np.asarray(classes).dtype.kind
    return {"i": "INT64", "u": "INT64", "f": "FP64", "b": "BOOL"}.get(kind, "BYTES")
