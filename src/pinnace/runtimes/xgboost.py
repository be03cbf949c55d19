"""XGBoost models saved in XGBoost's own JSON or UBJSON format (``save_model``).

These formats hold trees and parameters only, so loading runs no code. Outputs follow
:mod:`pinnace.runtimes._trees`: ``predict`` (class indices or values) and, for
``binary:logistic``/``multi:softprob`` classifiers, ``predict_proba``; both equal what
``XGBClassifier``/``XGBRegressor`` return for the same rows.

``options``: ``threads`` (default 1; XGBoost's ``nthread`` for predictions),
``output_roles`` (see :mod:`._trees`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from pinnace.errors import ModelLoadError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes._support import check_options, clean_error, int_option
from pinnace.runtimes._trees import TreeRuntime, labels_from_proba, output_roles, proba_matrix

_OPTIONS: Final = ("threads", "output_roles")
# Tried in order when the manifest names no model_file: ours, then MLServer's well-known names.
_CANDIDATES: Final = ("model.json", "model.ubj", "model.bst")
_PROBA_OBJECTIVES: Final = ("binary:logistic", "multi:softprob")
_CLASS_OBJECTIVES: Final = (*_PROBA_OBJECTIVES, "binary:logitraw", "binary:hinge", "multi:softmax")


class XGBoostRuntime(TreeRuntime["_ModelInfo"]):
    """A loaded ``xgboost.Booster``."""

    format: ClassVar[str] = "xgboost"
    platform: ClassVar[str] = "xgboost"
    default_model_file: ClassVar[str] = "model.json"
    model_file_candidates: ClassVar[tuple[str, ...]] = _CANDIDATES

    def load(self) -> None:
        options = check_options(self.manifest, self.format, _OPTIONS)
        threads = int_option(options, "threads", 1, minimum=1)
        path = self._require_file()
        self._booster = _read_booster(path)
        self._booster.set_param({"nthread": threads})
        self._info = _model_info(self._booster)
        self._roles = output_roles(
            self.manifest.outputs, options, classifier=self._info.classifier, has_proba=self._info.has_proba
        )

    def _booster_predict(self, matrix: np.ndarray) -> Any:
        return self._booster.inplace_predict(matrix)

    def _answer(self, role: str, raw: np.ndarray) -> np.ndarray:
        info = self._info
        assert info is not None
        if role == "raw":
            return raw
        if role == "predict_proba":
            return proba_matrix(raw, info.n_classes)
        if not info.classifier:
            return raw
        if raw.ndim > 1:
            return labels_from_proba(raw)
        if info.objective == "multi:softmax":
            return raw.astype(np.int64)
        # XGBClassifier.predict's own rule for every binary objective (logitraw included).
        return (raw > 0.5).astype(np.int64)

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        info = _model_info(_read_booster(path))
        return info.signature()


class _ModelInfo:
    """What the saved booster says about itself."""

    def __init__(self, objective: str, n_features: int, n_classes: int, n_targets: int) -> None:
        self.objective = objective
        self.n_features = n_features
        self.n_classes = n_classes
        self.n_targets = n_targets
        self.classifier = objective in _CLASS_OBJECTIVES
        self.has_proba = objective in _PROBA_OBJECTIVES

    def signature(self) -> tuple[list[TensorSignature], list[TensorSignature]]:
        # XGBoost computes in float32, so FP32 input loses nothing; NaN means "missing" to trees.
        inputs = [TensorSignature(name="input", datatype="FP32", shape=[-1, self.n_features], allow_nan=True)]
        if self.classifier:
            outputs = [TensorSignature(name="predict", datatype="INT64", shape=[-1])]
            if self.has_proba:
                width = max(self.n_classes, 2)
                outputs.append(TensorSignature(name="predict_proba", datatype="FP32", shape=[-1, width]))
        else:
            shape = [-1] if self.n_targets <= 1 else [-1, self.n_targets]
            outputs = [TensorSignature(name="predict", datatype="FP32", shape=shape)]
        return inputs, outputs


def _read_booster(path: Path) -> Any:
    import xgboost as xgb

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path.name!r}") from exc
    if not data:
        raise ModelLoadError(f"{path.name!r} is empty")
    try:
        is_json = _looks_like_json(data)
        document = json.loads(data) if is_json else decode_ubjson(data)
        check_model_document(document)
    except (ValueError, _Invalid) as exc:
        raise ModelLoadError(
            f"{path.name!r} is not a valid XGBoost JSON/UBJSON model (corrupt or truncated?): {clean_error(exc)}"
        ) from None
    if not is_json:
        # XGBoost's UBJSON reader trusts lengths and crashes on a truncated file (measured with
        # xgboost 3.2); its JSON reader checks them. The document is whole and checked, so hand
        # XGBoost the same model as JSON: float32 values survive the round trip exactly.
        data = json.dumps(document, default=_jsonable).encode()
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except Exception as exc:
        raise ModelLoadError(
            f"{path.name!r} is not a valid XGBoost JSON/UBJSON model (corrupt or truncated?): {clean_error(exc)}"
        ) from exc
    return booster


class _Invalid(Exception):
    """A structural fault in a model document."""


def _looks_like_json(data: bytes) -> bool:
    # Both formats open with "{"; JSON then has a quote (or space), UBJSON a length marker.
    head = data.lstrip()[:2]
    return head[:1] == b"{" and (len(head) < 2 or head[1:2] in b'"} \t\r\n')


def check_model_document(document: Any) -> None:
    """Refuse model documents whose trees XGBoost would follow out of bounds or in circles.

    XGBoost checks array sizes itself but not child indices, and predicting with a tree whose
    child points outside it (or back up it) crashes the process.
    """
    try:
        learner = document["learner"]
        booster = learner["gradient_booster"]
        n_features = int(learner["learner_model_param"]["num_feature"])
    except (KeyError, TypeError, ValueError):
        raise _Invalid("it lacks the learner and its parameters") from None
    name = booster.get("name") if isinstance(booster, dict) else None
    if name == "dart":
        booster = booster.get("gbtree", {})
        name = "gbtree"
    if name == "gblinear":
        return  # a weight vector; XGBoost checks its size
    if name != "gbtree":
        raise _Invalid(f"unknown booster {name!r}")
    try:
        trees = booster["model"]["trees"]
    except (KeyError, TypeError):
        raise _Invalid("it holds no trees") from None
    for number, tree in enumerate(trees):
        _check_tree(tree, number, n_features)


def _check_tree(tree: Any, number: int, n_features: int) -> None:
    where = f"tree {number}"
    try:
        n = int(tree["tree_param"]["num_nodes"])
        left = np.asarray(tree["left_children"], dtype=np.int64)
        right = np.asarray(tree["right_children"], dtype=np.int64)
    except (KeyError, TypeError, ValueError):
        raise _Invalid(f"{where} lacks its node arrays") from None
    if n < 1 or len(left) != n or len(right) != n:
        raise _Invalid(f"{where} has node arrays of the wrong length")
    if ((left < -1) | (left >= n) | (right < -1) | (right >= n) | ((left == -1) != (right == -1))).any():
        raise _Invalid(f"{where} points at a node it does not have")
    if n_features < 0:
        raise _Invalid("num_feature is negative")
    # Every node is reached once from the root: no cycles, no shared children.
    seen = np.zeros(n, dtype=bool)
    stack = [0]
    while stack:
        node = stack.pop()
        if seen[node]:
            raise _Invalid(f"{where} is not a tree (node {node} is reached twice)")
        seen[node] = True
        if left[node] != -1:
            stack.extend((int(left[node]), int(right[node])))


_UBJ_NUMBERS: Final = {"i": ">i1", "U": ">u1", "I": ">i2", "l": ">i4", "L": ">i8", "d": ">f4", "D": ">f8"}


def decode_ubjson(data: bytes) -> Any:
    """Decode a UBJSON document (the subset XGBoost writes, and the rest of the spec) with every
    length checked against the buffer; raises ValueError naming the offset of a fault."""
    decoder = _UBJDecoder(data)
    value = decoder.value()
    if decoder.pos != len(data):
        raise ValueError(f"UBJSON: {len(data) - decoder.pos} stray bytes after the document")
    return value


class _UBJDecoder:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.depth = 0

    def take(self, count: int) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise ValueError(f"UBJSON: truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def marker(self) -> str:
        return chr(self.take(1)[0])

    def number(self, kind: str) -> Any:
        dtype = np.dtype(_UBJ_NUMBERS[kind])
        return np.frombuffer(self.take(dtype.itemsize), dtype=dtype)[0].item()

    def length(self) -> int:
        kind = self.marker()
        if kind not in "iUIlL":
            raise ValueError(f"UBJSON: a length of type {kind!r} at byte {self.pos - 1}")
        value = int(self.number(kind))
        if value < 0:
            raise ValueError(f"UBJSON: a negative length at byte {self.pos}")
        return value

    def value(self, kind: str | None = None) -> Any:
        kind = kind or self.marker()
        while kind == "N":
            kind = self.marker()
        if kind in _UBJ_NUMBERS:
            return self.number(kind)
        if kind in "SH":
            return self.take(self.length()).decode("utf-8")
        if kind == "C":
            return self.take(1).decode("latin-1")
        if kind in "TFZ":
            return {"T": True, "F": False, "Z": None}[kind]
        if kind in "[{":
            self.depth += 1
            if self.depth > 64:
                raise ValueError("UBJSON: containers nest too deep")
            result = self.container(kind)
            self.depth -= 1
            return result
        raise ValueError(f"UBJSON: unknown type {kind!r} at byte {self.pos - 1}")

    def container(self, opening: str) -> Any:
        element_type: str | None = None
        count: int | None = None
        if self.data[self.pos : self.pos + 1] == b"$":
            self.pos += 1
            element_type = self.marker()
            if self.data[self.pos : self.pos + 1] != b"#":
                raise ValueError(f"UBJSON: a typed container without a count at byte {self.pos}")
        if self.data[self.pos : self.pos + 1] == b"#":
            self.pos += 1
            count = self.length()
        if opening == "[":
            if element_type in _UBJ_NUMBERS and count is not None:
                dtype = np.dtype(_UBJ_NUMBERS[element_type])
                return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype)
            items: list[Any] = []
            while count is None or len(items) < count:
                if count is None and self.data[self.pos : self.pos + 1] == b"]":
                    self.pos += 1
                    break
                items.append(self.value(element_type))
            return items
        members: dict[str, Any] = {}
        while count is None or len(members) < count:
            if count is None and self.data[self.pos : self.pos + 1] == b"}":
                self.pos += 1
                break
            key = self.take(self.length()).decode("utf-8")
            members[key] = self.value(element_type)
        return members


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _model_info(booster: Any) -> _ModelInfo:
    try:
        config = json.loads(booster.save_config())
        learner = config["learner"]
        params = learner["learner_model_param"]
        objective = str(learner["objective"]["name"])
        n_classes = int(params.get("num_class", "0") or 0)
        n_targets = int(params.get("num_target", "1") or 1)
        n_features = int(booster.num_features())
    except (KeyError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"the XGBoost model's configuration is incomplete: {clean_error(exc)}") from exc
    return _ModelInfo(objective, n_features, n_classes, n_targets)
