"""What the gradient-boosted tree runtimes (XGBoost, LightGBM) share: which output a manifest
name asks for, and how a booster's raw prediction becomes that output.

A tree model answers with one or more *roles*:

``predict``
    class indices (INT64) for classifiers, the predicted values for everything else — what the
    framework's scikit-learn wrapper ``predict`` returns.
``predict_proba``
    class probabilities ``[n, classes]`` (classifiers only) — ``predict_proba``.
``raw``
    the booster's own ``predict`` output, untouched (LightGBM's binary classifiers give the
    probability of class 1 as ``[n]``; MLServer's LightGBM runtime answers with this).

An output whose name is a role needs no configuration; any other name is mapped with
``options.output_roles`` (``{name: role}``), which is how imported Triton/MLServer names keep
working.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes._support import clean_error, fit_output, signatures_by_name
from pinnace.runtimes.base import Arrays, Runtime

ROLES: Final = ("predict", "predict_proba", "raw")


def output_roles(
    outputs: Sequence[TensorSignature], options: Mapping[str, Any], *, classifier: bool, has_proba: bool
) -> dict[str, str]:
    """Output name → role for every manifest output, refusing what the model cannot give."""
    mapping = options.get("output_roles", {})
    if not isinstance(mapping, Mapping) or not all(isinstance(v, str) for v in mapping.values()):
        raise ModelLoadError("options.output_roles must map output names to roles")
    for name, role in mapping.items():
        if role not in ROLES:
            raise ModelLoadError(f"options.output_roles.{name}: unknown role {role!r}; use {', '.join(ROLES)}")
    roles: dict[str, str] = {}
    names = [o.name for o in outputs] or (["predict", "predict_proba"] if has_proba else ["predict"])
    for name in names:
        role = mapping.get(name, name)
        if role not in ROLES:
            raise ModelLoadError(
                f"output {name!r} is not one of {', '.join(ROLES)}; name its role in options.output_roles"
            )
        if role == "predict_proba" and not has_proba:
            kind = "classifier objective" if classifier else "regression or ranking objective"
            raise ModelLoadError(f"output {name!r} asks for probabilities, which this {kind} does not give")
        roles[name] = role
    return roles


def proba_matrix(raw: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities as ``[n, classes]``, built as the scikit-learn wrappers build them."""
    if n_classes <= 2 and raw.ndim == 1:
        # Same arithmetic as XGBClassifier/LGBMClassifier.predict_proba so results are identical.
        stacked: np.ndarray = np.vstack((1.0 - raw, raw)).transpose()
        return stacked
    return raw


def labels_from_proba(proba: np.ndarray) -> np.ndarray:
    """Class indices, as the wrappers' ``predict``: the first most probable class."""
    labels: np.ndarray = np.argmax(proba, axis=1).astype(np.int64)
    return labels


def feature_matrix(inputs: Mapping[str, np.ndarray], order: Sequence[str]) -> np.ndarray:
    """One ``[n, features]`` matrix from the request: the single input, or several side by side.

    Several inputs (one per feature group, as some imported signatures declare) are joined in
    manifest order so that columns keep their meaning.
    """
    if len(inputs) == 1:
        (matrix,) = inputs.values()
    else:
        names = [n for n in order if n in inputs] or sorted(inputs)
        columns = [np.asarray(inputs[n]).reshape(len(inputs[n]), -1) for n in names]
        matrix = np.hstack(columns)
    if matrix.ndim == 1:
        matrix = matrix.reshape(1, -1)
    if matrix.ndim != 2:
        raise InvalidInputError(f"tree models take a [rows, features] matrix; got shape {list(matrix.shape)}")
    if matrix.dtype.kind not in "fiub":
        raise InvalidInputError(f"tree models take numbers; got numpy dtype {matrix.dtype}")
    return matrix


class TreeInfo(Protocol):
    """What a runtime learned about its booster when it loaded it."""

    objective: str
    n_features: int


InfoT = TypeVar("InfoT", bound=TreeInfo)


class TreeRuntime(Runtime, Generic[InfoT]):
    """The half of the XGBoost and LightGBM runtimes that is the same: a feature matrix in,
    one answer per output role out. Subclasses load the booster and say how it predicts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._booster: Any = None
        self._info: InfoT | None = None
        self._roles: dict[str, str] = {}
        self._outputs = signatures_by_name(self.manifest.outputs)
        self._input_order = [i.name for i in self.manifest.inputs]

    @abstractmethod
    def _booster_predict(self, matrix: np.ndarray) -> Any:
        """The booster's own prediction for ``matrix``."""

    @abstractmethod
    def _answer(self, role: str, raw: np.ndarray) -> np.ndarray:
        """The output for ``role`` from the booster's raw prediction."""

    def predict(self, inputs: Arrays, outputs: Sequence[str]) -> Arrays:
        info = self._info
        assert info is not None, "predict before load"
        matrix = feature_matrix(inputs, self._input_order)
        if matrix.shape[1] != info.n_features:
            raise InvalidInputError(f"the model takes {info.n_features} features per row; got {matrix.shape[1]}")
        try:
            raw = np.asarray(self._booster_predict(matrix))
        except Exception as exc:  # the frameworks raise their own errors with C++ detail
            raise InvalidInputError(f"{self.format} rejected the input: {clean_error(exc)}") from exc
        result: Arrays = {}
        for name in outputs or list(self._roles):
            role = self._roles.get(name)
            if role is None:
                raise InvalidInputError(f"unknown output {name!r}")
            result[name] = fit_output(self._answer(role, raw), self._outputs.get(name))
        return result

    def unload(self) -> None:
        self._booster = None

    def metadata_parameters(self) -> dict[str, Any]:
        if self._info is None:
            return {}
        return {"objective": self._info.objective, "features": self._info.n_features}
