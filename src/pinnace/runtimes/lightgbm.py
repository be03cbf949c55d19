"""LightGBM models in LightGBM's native text format (``Booster.save_model``).

The text holds trees and parameters only, so loading runs no code. LightGBM's own parser,
however, trusts its input: a truncated or damaged file can load with trees silently missing,
abort the process from a parallel parsing loop, or crash it outright (measured with
lightgbm 4.7). A server must survive a bad artifact, so :func:`validate_model_text` checks the
whole structure in Python — header, every tree's size and arrays, the closing sections —
before LightGBM sees a byte.

Outputs follow :mod:`pinnace.runtimes._trees`: ``predict`` (class indices or values), and for
binary/multiclass objectives ``predict_proba``; both equal ``LGBMClassifier``/``LGBMRegressor``
for the same rows. ``raw`` is the booster's own ``predict`` (what MLServer answers with).

``options``: ``threads`` (default 1), ``output_roles`` (see :mod:`._trees`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np

from pinnace.errors import ModelLoadError
from pinnace.manifest.schema import TensorSignature
from pinnace.runtimes._support import check_options, clean_error, int_option
from pinnace.runtimes._trees import TreeRuntime, labels_from_proba, output_roles, proba_matrix

_OPTIONS: Final = ("threads", "output_roles")
# Tried in order when the manifest names no model_file: ours, then MLServer's well-known name.
_CANDIDATES: Final = ("model.txt", "model.bst")
_CLASS_OBJECTIVES: Final = ("binary", "multiclass", "multiclassova")
_TREE_HEADER: Final = re.compile(r"^Tree=(\d+)$")
# LightGBM's parser misbehaves on stray control bytes (a crash, measured); text models have none.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_PARAMETER: Final = re.compile(r"^\[[A-Za-z0-9_]+: .*\]$")


class LightGBMRuntime(TreeRuntime["ModelText"]):
    """A loaded ``lightgbm.Booster``."""

    format: ClassVar[str] = "lightgbm"
    platform: ClassVar[str] = "lightgbm"
    default_model_file: ClassVar[str] = "model.txt"
    model_file_candidates: ClassVar[tuple[str, ...]] = _CANDIDATES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._threads = 1

    def load(self) -> None:
        options = check_options(self.manifest, self.format, _OPTIONS)
        self._threads = int_option(options, "threads", 1, minimum=1) or 1
        self._booster, self._info = _read_booster(self._require_file())
        self._roles = output_roles(
            self.manifest.outputs, options, classifier=self._info.classifier, has_proba=self._info.classifier
        )

    def _booster_predict(self, matrix: np.ndarray) -> Any:
        return self._booster.predict(matrix, num_threads=self._threads)

    def _answer(self, role: str, raw: np.ndarray) -> np.ndarray:
        info = self._info
        assert info is not None
        if role == "raw" or not info.classifier:
            return raw
        proba = proba_matrix(raw, info.n_classes)
        return proba if role == "predict_proba" else labels_from_proba(proba)

    @classmethod
    def inspect(cls, path: Path) -> tuple[list[TensorSignature], list[TensorSignature]] | None:
        _, info = _read_booster(path)
        return info.signature()


class ModelText:
    """The facts :func:`validate_model_text` established about a model file."""

    def __init__(self, objective: str, n_features: int, n_classes: int, n_trees: int) -> None:
        self.objective = objective
        self.n_features = n_features
        self.n_classes = n_classes
        self.n_trees = n_trees
        self.classifier = objective in _CLASS_OBJECTIVES

    def signature(self) -> tuple[list[TensorSignature], list[TensorSignature]]:
        # LightGBM splits on float64 thresholds; FP64 input keeps every row on its exact path.
        inputs = [TensorSignature(name="input", datatype="FP64", shape=[-1, self.n_features], allow_nan=True)]
        if self.classifier:
            width = max(self.n_classes, 2)
            outputs = [
                TensorSignature(name="predict", datatype="INT64", shape=[-1]),
                TensorSignature(name="predict_proba", datatype="FP64", shape=[-1, width]),
            ]
        else:
            outputs = [TensorSignature(name="predict", datatype="FP64", shape=[-1])]
        return inputs, outputs


def _read_booster(path: Path) -> tuple[Any, ModelText]:
    import lightgbm as lgb

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path.name!r}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path.name!r} is not a LightGBM text model (not UTF-8 text)") from None
    try:
        info = validate_model_text(text)
    except _Invalid as exc:
        raise ModelLoadError(
            f"{path.name!r} is not a valid LightGBM text model (corrupt or truncated?): {exc}"
        ) from None
    try:
        booster = lgb.Booster(model_str=_without_tree_sizes(text))
    except Exception as exc:
        raise ModelLoadError(f"lightgbm could not load {path.name!r}: {clean_error(exc)}") from exc
    if booster.num_trees() != info.n_trees or booster.num_feature() != info.n_features:
        raise ModelLoadError(f"lightgbm read {path.name!r} differently from its header; refusing it")
    return booster, info


def _without_tree_sizes(text: str) -> str:
    # With ``tree_sizes`` LightGBM parses trees in an OpenMP loop, where a parse error aborts
    # the whole process instead of raising; without it the same trees are parsed one after
    # another and errors come back as exceptions. The sizes were checked already.
    start = text.find("\ntree_sizes=")
    if start < 0:
        return text
    end = text.find("\n", start + 1)
    return text[:start] + text[end:]


class _Invalid(Exception):
    """A structural fault in a model text; the message says where."""


def validate_model_text(text: str) -> ModelText:
    """Check a LightGBM text model completely; raise :class:`_Invalid` naming the first fault."""
    bad = _CONTROL.search(text)
    if bad is not None:
        raise _Invalid(f"it holds a control character at offset {bad.start()}")
    lines = text.split("\n")
    if not lines or lines[0].strip() != "tree":
        raise _Invalid("it does not start with the line 'tree'")
    header, index = _key_values(lines, 1)
    for key in ("version", "num_class", "num_tree_per_iteration", "max_feature_idx", "objective"):
        if key not in header:
            raise _Invalid(f"its header lacks {key!r}")
    n_features = _int(header["max_feature_idx"], "max_feature_idx") + 1
    n_classes = _int(header["num_class"], "num_class")
    per_iteration = _int(header["num_tree_per_iteration"], "num_tree_per_iteration")
    objective = header["objective"].split(" ")[0]
    if n_features < 1 or n_classes < 1 or per_iteration < 1:
        raise _Invalid("its header holds impossible sizes")
    if "feature_names" in header and len(header["feature_names"].split(" ")) != n_features:
        raise _Invalid("feature_names does not match max_feature_idx")
    sizes = [_int(s, "tree_sizes") for s in header["tree_sizes"].split(" ")] if header.get("tree_sizes") else None
    try:
        end = lines.index("end of trees", index)
    except ValueError:
        raise _Invalid("the line 'end of trees' is missing") from None
    n_trees = _check_trees(lines, index, end, n_features, sizes)
    if n_trees % per_iteration:
        raise _Invalid("its tree count is not a multiple of num_tree_per_iteration")
    tail = lines[end + 1 :]
    if "parameters:" in tail:
        first = tail.index("parameters:") + 1
        try:
            last = tail.index("end of parameters", first)
        except ValueError:
            raise _Invalid("the parameters section is cut off") from None
        if not all(not line or _PARAMETER.match(line) for line in tail[first:last]):
            raise _Invalid("the parameters section holds a malformed line")
    return ModelText(objective, n_features, n_classes, n_trees)


def _check_trees(lines: list[str], start: int, end: int, n_features: int, sizes: list[int] | None) -> int:
    count = 0
    i = start
    while i < end:
        match = _TREE_HEADER.match(lines[i])
        if match is None:
            if lines[i].strip():
                raise _Invalid(f"line {i + 1} is not part of a tree")
            i += 1
            continue
        if int(match.group(1)) != count:
            raise _Invalid(f"tree {count} is missing or out of order")
        j = i + 1
        while j < end and not _TREE_HEADER.match(lines[j]):
            j += 1
        block = lines[i:j]
        if sizes is not None:
            # tree_sizes counts the bytes of "Tree=k\n…\n\n" exactly; LightGBM seeks by them.
            size = sum(len(line.encode()) + 1 for line in block)
            if count >= len(sizes) or size != sizes[count]:
                raise _Invalid(f"tree {count} does not have the size the header records")
        values, _ = _key_values(block, 1)
        _check_tree(values, count, n_features)
        count += 1
        i = j
    if sizes is not None and count != len(sizes):
        raise _Invalid(f"the header lists {len(sizes)} trees but the file holds {count}")
    return count


def _check_tree(values: dict[str, str], number: int, n_features: int) -> None:
    where = f"tree {number}"
    leaves = _int(values.get("num_leaves", ""), f"{where} num_leaves")
    if leaves < 1:
        raise _Invalid(f"{where} has no leaves")
    _numbers(values, "leaf_value", leaves, where, float)
    if leaves == 1:
        return
    internal = leaves - 1
    features = _numbers(values, "split_feature", internal, where, int)
    _numbers(values, "threshold", internal, where, float)
    _numbers(values, "decision_type", internal, where, int)
    if any(f < 0 or f >= n_features for f in features):
        raise _Invalid(f"{where} splits on a feature the model does not have")
    for side in ("left_child", "right_child"):
        for child in _numbers(values, side, internal, where, int):
            if not (0 <= child < internal or 0 <= ~child < leaves):
                raise _Invalid(f"{where} points at a node it does not have")
    if values.get("is_linear", "0") == "1":
        widths = _numbers(values, "num_features", leaves, where, int)
        _numbers(values, "leaf_const", leaves, where, float)
        _numbers(values, "leaf_features", sum(widths), where, int)
        _numbers(values, "leaf_coeff", sum(widths), where, float)
    cats = _int(values.get("num_cat", "0"), f"{where} num_cat")
    if cats > 0:
        bounds = _numbers(values, "cat_boundaries", cats + 1, where, int)
        _numbers(values, "cat_threshold", bounds[-1], where, int)


def _key_values(lines: list[str], start: int) -> tuple[dict[str, str], int]:
    """``key=value`` lines from ``start`` up to the first blank line; returns them and the index after."""
    values: dict[str, str] = {}
    i = start
    while i < len(lines) and lines[i].strip():
        key, sep, value = lines[i].partition("=")
        if sep:
            values[key] = value
        i += 1
    return values, i


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _Invalid(f"{what} is not a whole number") from None


# What LightGBM's own number parser accepts: decimals with an exponent, and nan/inf words.
_NUMBER: Final = re.compile(r"^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)$", re.IGNORECASE)


def _numbers(values: dict[str, str], key: str, count: int, where: str, kind: type[Any]) -> list[Any]:
    raw = values.get(key)
    if raw is None:
        raise _Invalid(f"{where} lacks {key!r}")
    try:
        items = raw.split()
        if not all(_NUMBER.match(v) for v in items):
            raise ValueError(key)
        parsed = [kind(v) for v in items]
    except ValueError:
        raise _Invalid(f"{where} has a malformed {key!r}") from None
    if len(parsed) != count:
        raise _Invalid(f"{where} has {len(parsed)} values in {key!r} where {count} belong")
    return parsed
