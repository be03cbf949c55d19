from __future__ import annotations

import numpy as np
import pytest

from pinnace.core.validation import SignatureCheck
from pinnace.errors import InvalidInputError
from pinnace.manifest import parse_manifest
from pinnace.protocol.types import InferRequest, RequestedOutput, Tensor

MANIFEST = parse_manifest(
    """
name: m
runtime: onnx
inputs:
  - {name: x, datatype: FP32, shape: [-1, 3]}
  - {name: w, datatype: FP32, shape: [-1, 3], allow_nan: true}
outputs:
  - {name: y, datatype: FP32, shape: [-1]}
  - {name: z, datatype: FP32, shape: [-1]}
batching: {max_batch_size: 4}
"""
)


def req(*tensors: Tensor, outputs: list[str] | None = None) -> InferRequest:
    return InferRequest(
        inputs=list(tensors), outputs=[RequestedOutput(o) for o in outputs] if outputs else None
    )


def fp32(name: str, *rows: list[float]) -> Tensor:
    return Tensor(name, "FP32", np.array(rows, dtype=np.float32))


def test_good_request_gives_rows_key_and_outputs() -> None:
    checked = SignatureCheck(MANIFEST).check(req(fp32("x", [1, 2, 3], [4, 5, 6]), fp32("w", [0, 0, 0], [1, 1, 1]), outputs=["z"]))
    assert checked.rows == 2
    assert checked.outputs == ["z"]
    again = SignatureCheck(MANIFEST).check(req(fp32("x", [1, 2, 3]), fp32("w", [0, 0, 0])))
    assert again.key == checked.key  # same inner shapes batch together
    assert again.outputs == ["y", "z"]


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (req(fp32("x", [1, 2, 3])), "missing input 'w'"),
        (req(fp32("x", [1, 2, 3]), fp32("w", [1, 2, 3]), fp32("q", [1, 2, 3])), "unknown input 'q'"),
        (req(fp32("x", [1, 2]), fp32("w", [1, 2])), "expects [-1, 3]"),
        (req(Tensor("x", "FP64", np.zeros((1, 3))), fp32("w", [1, 2, 3])), "datatype FP64"),
        (req(fp32("x", [1, 2, float("nan")]), fp32("w", [1, 2, 3])), "NaN or Inf"),
        (req(fp32("x", [1, 2, 3]), fp32("w", [1, 2, 3], [1, 2, 3])), "same size along the batch"),
        (req(fp32("x", *[[1, 2, 3]] * 5), fp32("w", *[[1, 2, 3]] * 5)), "exceeds the model's max_batch_size"),
        (req(fp32("x", [1, 2, 3]), fp32("w", [1, 2, 3]), outputs=["nope"]), "unknown output 'nope'"),
        (req(fp32("x", [1, 2, 3]), fp32("x", [1, 2, 3])), "given twice"),
    ],
)
def test_bad_requests(request_: InferRequest, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        SignatureCheck(MANIFEST).check(request_)
    assert message in info.value.message


def one_input(datatype: str, width: int) -> SignatureCheck:
    """The check of a model with one input ``x`` of ``datatype``, ``width`` values a row."""
    return SignatureCheck(
        parse_manifest(
            f"""
name: m
runtime: onnx
inputs: [{{name: x, datatype: {datatype}, shape: [-1, {width}]}}]
outputs: [{{name: y, datatype: FP32, shape: [-1]}}]
batching: {{max_batch_size: 4}}
"""
        )
    )


@pytest.mark.parametrize(
    ("values", "finite"),
    [
        ([3e38, 3e38, 3e38], True),  # float32's largest values: their sum is still finite
        ([float("inf"), float("-inf"), 0], False),  # a sum of NaN, not of infinities
        ([float("-inf"), 1, 2], False),
        ([float("nan"), 1, 2], False),
    ],
)
def test_finiteness_of_small_float32_tensors(values: list[float], finite: bool) -> None:
    request_ = req(fp32("x", values), fp32("w", [1, 2, 3]))
    if finite:
        assert SignatureCheck(MANIFEST).check(request_).rows == 1
    else:
        with pytest.raises(InvalidInputError, match="NaN or Inf"):
            SignatureCheck(MANIFEST).check(request_)


def test_finite_float64_values_whose_sum_overflows_are_accepted() -> None:
    huge = Tensor("x", "FP64", np.array([[1.7e308, 1.7e308]]))
    check = one_input("FP64", 2)
    assert check.check(req(huge)).rows == 1
    inf = Tensor("x", "FP64", np.array([[1.7e308, float("inf")]]))
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        check.check(req(inf))


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
@pytest.mark.parametrize("width", [8, 256, 16384, 20000])  # each way of checking, and its edge
@pytest.mark.parametrize(("where", "bad"), [(0, float("nan")), (-1, float("inf")), (-1, float("-inf"))])
def test_a_single_nonfinite_value_is_found_in_tensors_of_any_size(
    datatype: str, width: int, where: int, bad: float
) -> None:
    check = one_input(datatype, width)
    values = np.full((1, width), 1.5, dtype={"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}[datatype])
    assert check.check(req(Tensor("x", datatype, values))).rows == 1
    values[0, where] = bad
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        check.check(req(Tensor("x", datatype, values)))


def test_nan_allowed_where_the_manifest_says_so() -> None:
    checked = SignatureCheck(MANIFEST).check(req(fp32("x", [1, 2, 3]), fp32("w", [float("inf"), 0, 0])))
    assert checked.rows == 1


OPTIONAL = parse_manifest(
    """
name: m
runtime: onnx
inputs:
  - {name: a, datatype: FP32, shape: [-1, 2]}
  - {name: b, datatype: FP32, shape: [-1, 2]}
  - {name: c, datatype: INT64, shape: [-1, -1], optional: true}
  - {name: d, datatype: FP32, shape: [2, 2]}
outputs:
  - {name: y, datatype: FP32, shape: [-1]}
batching: {max_batch_size: 4}
"""
)


def test_a_missing_required_input_is_found_even_beside_an_optional_one() -> None:
    tensors = [fp32("a", [1, 2], [3, 4]), Tensor("c", "INT64", np.zeros((2, 5), dtype=np.int64))]
    with pytest.raises(InvalidInputError, match="missing input 'b'"):
        SignatureCheck(OPTIONAL).check(req(*tensors, fp32("d", [1, 2], [3, 4])))


def test_fixed_leading_axes_and_variable_inner_axes_are_checked() -> None:
    check = SignatureCheck(OPTIONAL)
    base = [fp32("a", [1, 2], [3, 4]), fp32("b", [1, 2], [3, 4])]
    with pytest.raises(InvalidInputError, match=r"shape \[3, 2\], the model expects \[2, 2\]"):
        check.check(req(*base, fp32("d", [1, 2], [3, 4], [5, 6])))
    narrow = check.check(req(*base, fp32("d", [1, 2], [3, 4]), Tensor("c", "INT64", np.zeros((2, 1), dtype=np.int64))))
    wide = check.check(req(*base, fp32("d", [1, 2], [3, 4]), Tensor("c", "INT64", np.zeros((2, 7), dtype=np.int64))))
    without = check.check(req(*base, fp32("d", [1, 2], [3, 4])))
    assert len({narrow.key, wide.key, without.key}) == 3, "different inner shapes or inputs never share a batch"


def test_a_signature_with_fixed_inner_shapes_gives_every_request_one_key() -> None:
    check = SignatureCheck(MANIFEST)
    one = check.check(req(fp32("x", [1, 2, 3]), fp32("w", [0, 0, 0])))
    three = check.check(req(fp32("w", *[[0, 0, 0]] * 3), fp32("x", *[[1, 2, 3]] * 3)))
    assert one.key == three.key
    assert three.rows == 3


def bf16(*values: float) -> Tensor:
    """BF16 as it travels: the upper 16 bits of each float32."""
    bits = (np.array([values], dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return Tensor("x", "BF16", bits)


def test_bf16_nan_and_inf_are_found_in_their_bit_patterns() -> None:
    check = one_input("BF16", 3)
    assert check.check(req(bf16(1.5, -2.0, 3e38))).rows == 1
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(InvalidInputError, match="NaN or Inf"):
            check.check(req(bf16(1.0, bad, 0.0)))
