"""gRPC messages ↔ protocol types, checked against tritonclient's own messages and decoder."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import InferResult
from tritonclient.grpc import service_pb2 as triton_pb

from pinnace.core.stats import BatchStat, Duration, InferenceStats, ModelStats
from pinnace.errors import (
    DeadlineExceededError,
    ErrorKind,
    InvalidInputError,
    PayloadTooLargeError,
    PinnaceError,
    RateLimitedError,
)
from pinnace.manifest import parse_manifest
from pinnace.protocol.types import InferRequest, InferResponse, RequestedOutput, Tensor
from pinnace.server.grpc import convert
from pinnace.server.grpc.errors import GRPC_STATUS, code_of, retry_after_metadata
from pinnace.server.grpc.generated import grpc_service_pb2 as pb
from pinnace.server.rest.errors import HTTP_STATUS

MAX = 1 << 20

# datatype -> a sample array (BF16 travels as uint16 bit patterns)
SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], np.uint8),
    "UINT16": np.array([[0, 7, 65535]], np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], np.uint64),
    "INT8": np.array([[-128, 0, 127]], np.int8),
    "INT16": np.array([[-32768, 0, 32767]], np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], np.int64),
    "FP16": np.array([[0.5, -1.0, 65504.0]], np.float16),
    "FP32": np.array([[0.5, -1.0, 3.25]], np.float32),
    "FP64": np.array([[0.5, -1.0, 1e300]], np.float64),
    "BF16": np.array([[0x3F80, 0x0000, 0xC000]], np.uint16),
    "BYTES": np.array([[b"a", "h\u00e9llo".encode(), b""]], dtype=object),
}
TYPED = sorted(set(SAMPLES) - {"FP16", "BF16"})


def triton_request(**kwargs: object) -> pb.ModelInferRequest:
    """A request built with tritonclient's messages, parsed by ours: proves wire compatibility."""
    return pb.ModelInferRequest.FromString(triton_pb.ModelInferRequest(**kwargs).SerializeToString())


def raw_of(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        return b"".join(len(x).to_bytes(4, "little") + x for x in array.ravel())
    return array.astype(array.dtype.newbyteorder("<")).tobytes()


def decode(msg: pb.ModelInferRequest, time_remaining: float | None = None) -> InferRequest:
    return convert.decode_infer_request(msg, max_elements=MAX, time_remaining=time_remaining)


@pytest.mark.parametrize("datatype", sorted(SAMPLES))
def test_raw_input_contents_every_datatype(datatype: str) -> None:
    sample = SAMPLES[datatype]
    msg = triton_request(
        model_name="m",
        inputs=[{"name": "x", "datatype": datatype, "shape": [1, 3]}],
        raw_input_contents=[raw_of(datatype, sample)],
    )
    (tensor,) = decode(msg).inputs
    assert tensor.datatype == datatype
    assert tensor.data.shape == (1, 3)
    np.testing.assert_array_equal(tensor.data, sample)


def test_raw_input_is_a_view_not_a_copy() -> None:
    msg = triton_request(
        inputs=[{"name": "x", "datatype": "FP32", "shape": [2, 2]}],
        raw_input_contents=[np.arange(4, dtype=np.float32).tobytes()],
    )
    data = decode(msg).inputs[0].data
    assert not data.flags.owndata
    assert not data.flags.writeable


@pytest.mark.parametrize("datatype", TYPED)
def test_typed_contents_every_datatype(datatype: str) -> None:
    sample = SAMPLES[datatype]
    field, _ = convert._TYPED[datatype]
    values = list(sample.ravel()) if datatype == "BYTES" else sample.ravel().tolist()
    msg = triton_request(inputs=[{"name": "x", "datatype": datatype, "shape": [1, 3], "contents": {field: values}}])
    (tensor,) = decode(msg).inputs
    assert tensor.data.dtype == sample.dtype
    np.testing.assert_array_equal(tensor.data, sample)


def inp(datatype: str, shape: list[int], name: str = "x", **contents: list[object]) -> dict[str, object]:
    tensor: dict[str, object] = {"name": name, "datatype": datatype, "shape": shape}
    if contents:
        tensor["contents"] = contents
    return tensor


@pytest.mark.parametrize(
    ("inputs", "raw", "match"),
    [
        ([inp("FP32", [2], fp32_contents=[1.0])], [], "1 values in contents.fp32_contents, but"),
        ([inp("FP32", [1], int_contents=[1])], [], "0 values in contents.fp32_contents"),
        ([inp("INT8", [1], int_contents=[300])], [], "out of range for int8"),
        ([inp("UINT8", [1], uint_contents=[256])], [], "out of range for uint8"),
        (
            [inp("FP16", [1], fp32_contents=[1.0])],
            [],
            "FP16 data must be sent in raw_input_contents",
        ),
        ([inp("FP8", [1])], [], "unknown datatype 'FP8'"),
        ([inp("FP32", [1]), inp("FP32", [1], "y")], [b"\0\0\0\0"], "1 raw_input_contents for 2"),
        ([inp("FP32", [1], fp32_contents=[1.0])], [b"\0\0\0\0"], "both contents and raw"),
        ([inp("FP32", [3])], [b"\0\0\0\0"], "4 bytes of data"),
        ([inp("FP32", [-1])], [b""], "invalid dimension -1"),
        ([inp("BYTES", [1])], [b"\x09\0\0\0ab"], "runs past the data"),
    ],
)
def test_bad_inputs_are_invalid_argument(inputs: list[dict[str, object]], raw: list[bytes], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        decode(triton_request(inputs=inputs, raw_input_contents=raw))


def test_oversize_shape_is_refused_before_allocation() -> None:
    msg = triton_request(inputs=[{"name": "x", "datatype": "FP32", "shape": [MAX, 2]}], raw_input_contents=[b""])
    with pytest.raises(PayloadTooLargeError):
        decode(msg)


def test_parameters_id_and_requested_outputs() -> None:
    msg = triton_request(
        id="r1",
        parameters={
            "flag": {"bool_param": True},
            "n": {"int64_param": -3},
            "s": {"string_param": "x"},
            "f": {"double_param": 0.5},
            "u": {"uint64_param": 2**64 - 1},
        },
        inputs=[{"name": "x", "datatype": "INT32", "shape": [0]}],
        outputs=[{"name": "y", "parameters": {"binary_data": {"bool_param": False}}}],
    )
    request = decode(msg)
    assert request.id == "r1"
    assert request.parameters == {"flag": True, "n": -3, "s": "x", "f": 0.5, "u": 2**64 - 1}
    assert request.outputs == [RequestedOutput(name="y", parameters={"binary_data": False})]
    assert request.inputs[0].data.shape == (0,)


def test_deadline_becomes_the_timeout_parameter() -> None:
    msg = triton_request(inputs=[])
    assert decode(msg).parameters is None
    assert decode(msg, time_remaining=0.25).parameters == {"timeout": 250_000}
    shorter = triton_request(parameters={"timeout": {"int64_param": 1000}})
    assert decode(shorter, time_remaining=0.25).parameters == {"timeout": 1000}
    longer = triton_request(parameters={"timeout": {"int64_param": 9_000_000}})
    assert decode(longer, time_remaining=0.25).parameters == {"timeout": 250_000}
    with pytest.raises(DeadlineExceededError):
        decode(msg, time_remaining=0.0)


def response_for(outputs: dict[str, tuple[str, np.ndarray]]) -> InferResponse:
    return InferResponse(
        model_name="m",
        model_version="1",
        id="r9",
        outputs=[Tensor(name=n, datatype=dt, data=a) for n, (dt, a) in outputs.items()],
    )


def test_outputs_are_raw_and_tritonclient_reads_every_datatype() -> None:
    response = response_for({dt: (dt, a) for dt, a in SAMPLES.items()})
    msg = convert.encode_infer_response(response, InferRequest(inputs=[]))
    assert len(msg.raw_output_contents) == len(SAMPLES)
    result = InferResult(triton_pb.ModelInferResponse.FromString(msg.SerializeToString()))
    assert result.get_response().id == "r9"
    for datatype, sample in SAMPLES.items():
        got = result.as_numpy(datatype)
        assert got is not None
        if datatype != "BF16":  # tritonclient decodes BF16 to float32
            np.testing.assert_array_equal(got, sample)


def test_typed_outputs_on_request() -> None:
    response = response_for({dt: (dt, SAMPLES[dt]) for dt in TYPED})
    asked = InferRequest(
        inputs=[],
        outputs=[RequestedOutput(name=dt, parameters={"binary_data": False}) for dt in TYPED],
    )
    for request in (asked, InferRequest(inputs=[], parameters={"binary_data_output": False})):
        msg = convert.encode_infer_response(response, request)
        assert not msg.raw_output_contents
        for out in msg.outputs:
            field, _ = convert._TYPED[out.datatype]
            assert list(getattr(out.contents, field)) == SAMPLES[out.datatype].ravel().tolist()
            assert list(out.shape) == [1, 3]


def test_typed_outputs_fall_back_to_raw_for_fp16() -> None:
    response = response_for({"h": ("FP16", SAMPLES["FP16"]), "f": ("FP32", SAMPLES["FP32"])})
    msg = convert.encode_infer_response(response, InferRequest(inputs=[], parameters={"binary_data_output": False}))
    assert len(msg.raw_output_contents) == 2


def test_response_parameters() -> None:
    response = response_for({"y": ("FP32", SAMPLES["FP32"])})
    response.parameters = {"b": True, "i": 3, "u": 2**64 - 1, "f": 0.5, "s": "x"}
    response.outputs[0].parameters = {"k": "v"}
    msg = triton_pb.ModelInferResponse.FromString(
        convert.encode_infer_response(response, InferRequest(inputs=[])).SerializeToString()
    )
    assert msg.parameters["b"].bool_param is True
    assert msg.parameters["i"].int64_param == 3
    assert msg.parameters["u"].uint64_param == 2**64 - 1
    assert msg.parameters["f"].double_param == 0.5
    assert msg.parameters["s"].string_param == "x"
    assert msg.outputs[0].parameters["k"].string_param == "v"


def test_model_config_reads_as_tritons() -> None:
    manifest = parse_manifest(
        """
        name: iris
        runtime: onnx
        inputs:
          - {name: input, datatype: FP32, shape: [-1, 4]}
          - {name: s, datatype: BYTES, shape: [-1]}
        outputs: [{name: label, datatype: INT64, shape: [-1]}]
        batching: {max_batch_size: 64, max_queue_delay_us: 100}
        instances: 2
        """
    )
    raw = convert.model_config_response(manifest, "onnxruntime_onnx").SerializeToString()
    from tritonclient.grpc import model_config_pb2

    config = triton_pb.ModelConfigResponse.FromString(raw).config
    assert config.name == "iris"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 64
    assert list(config.input[0].dims) == [4]
    assert config.input[1].data_type == model_config_pb2.TYPE_STRING
    assert config.output[0].data_type == model_config_pb2.TYPE_INT64
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.instance_group[0].count == 2


def test_statistics_read_as_tritons() -> None:
    stats = ModelStats(
        name="iris",
        version="1",
        last_inference=1_700_000_000_000,
        inference_count=5,
        execution_count=2,
        inference_stats=InferenceStats(compute_infer=Duration(count=5, ns=2**40)),
        batch_stats=[BatchStat(batch_size=1), BatchStat(batch_size=4)],
    )
    raw = convert.model_statistics_response([stats]).SerializeToString()
    (got,) = triton_pb.ModelStatisticsResponse.FromString(raw).model_stats
    assert (got.name, got.version, got.inference_count, got.execution_count) == ("iris", "1", 5, 2)
    assert got.last_inference == 1_700_000_000_000
    assert (got.inference_stats.compute_infer.count, got.inference_stats.compute_infer.ns) == (
        5,
        2**40,
    )
    assert [b.batch_size for b in got.batch_stats] == [1, 4]


def test_load_refuses_unsupported_parameters() -> None:
    request = pb.RepositoryModelLoadRequest(model_name="m")
    assert convert.load_model_name(request) == "m"
    request.parameters["config"].string_param = "{}"
    with pytest.raises(InvalidInputError, match="not supported"):
        convert.load_model_name(request)


def test_every_rpc_has_message_types() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert set(convert.RPC_TYPES) == {m.name for m in service.methods}
    assert convert.SERVICE == "inference.GRPCInferenceService"


def test_error_table_covers_every_kind_consistently_with_rest() -> None:
    assert set(GRPC_STATUS) == set(ErrorKind) == set(HTTP_STATUS)
    by_http = {
        400: {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION},
        401: {grpc.StatusCode.UNAUTHENTICATED},
        403: {grpc.StatusCode.PERMISSION_DENIED},
        404: {grpc.StatusCode.NOT_FOUND},
        413: {grpc.StatusCode.RESOURCE_EXHAUSTED},
        429: {grpc.StatusCode.RESOURCE_EXHAUSTED},
        500: {grpc.StatusCode.INTERNAL},
        502: {grpc.StatusCode.UNAVAILABLE},
        503: {grpc.StatusCode.UNAVAILABLE},
        504: {grpc.StatusCode.DEADLINE_EXCEEDED},
    }
    for kind in ErrorKind:
        assert GRPC_STATUS[kind] in by_http[HTTP_STATUS[kind]], kind


def test_retry_after_travels_as_metadata() -> None:
    assert retry_after_metadata(PinnaceError("x")) == ()
    busy = RateLimitedError("slow down", retry_after=0.2)
    assert code_of(busy) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_after_metadata(busy) == (("retry-after", "1"),)


@pytest.mark.parametrize(
    ("request_", "label"),
    [
        (pb.ModelInferRequest(model_name="m", model_version="2"), ("m", "2")),
        (pb.ModelMetadataRequest(name="m", version="3"), ("m", "3")),
        (pb.RepositoryModelLoadRequest(model_name="m"), ("m", "")),
        (pb.ServerLiveRequest(), ("", "")),
    ],
)
def test_model_label_for_every_kind_of_request(request_: object, label: tuple[str, str]) -> None:
    assert convert.model_label(request_) == label
