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

from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from pinnace.errors import InvalidInputError, ModelLoadError
from pinnace.manifest.schema import TensorSignature

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
