"""Protobuf messages ↔ pinnace protocol types: the only module that touches gRPC messages.

Inputs arrive either as ``raw_input_contents`` (one little-endian buffer per input, what
tritonclient sends) or as typed ``contents``; both become numpy arrays. Raw buffers become
read-only views (``np.frombuffer``, no copy); typed contents are copied once out of the
repeated field. Outputs go back as ``raw_output_contents`` (Triton does the same, and
tritonclient reads typed contents only for BYTES) unless the client asks for typed contents
with ``binary_data: false`` on every requested output or ``binary_data_output: false``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import msgspec
import numpy as np
from google.protobuf import json_format

from pinnace.core.stats import ModelStats
from pinnace.errors import DeadlineExceededError, InvalidInputError
from pinnace.manifest.schema import Manifest, TensorSignature
from pinnace.protocol.datatypes import dtype_of
from pinnace.protocol.tensors import array_from_bytes, array_to_bytes, as_bytes, element_count
from pinnace.protocol.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    Parameters,
    RepositoryEntry,
    RequestedOutput,
    ServerMetadata,
    Tensor,
    TensorSpec,
)
from pinnace.server.grpc.generated import grpc_service_pb2 as pb

# datatype -> (InferTensorContents field, numpy dtype of that field). Narrow integer types
# travel widened in the 32-bit fields; FP16 and BF16 have no typed field (raw only).
_TYPED: Final[dict[str, tuple[str, np.dtype]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    "INT8": ("int_contents", np.dtype(np.int32)),
    "INT16": ("int_contents", np.dtype(np.int32)),
    "INT32": ("int_contents", np.dtype(np.int32)),
    "INT64": ("int64_contents", np.dtype(np.int64)),
    "UINT8": ("uint_contents", np.dtype(np.uint32)),
    "UINT16": ("uint_contents", np.dtype(np.uint32)),
    "UINT32": ("uint_contents", np.dtype(np.uint32)),
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
    "BYTES": ("bytes_contents", np.dtype(object)),
}

_INT64_MAX: Final = 2**63 - 1

# -- RPC message types (for the server's method table) ---------------------------------------

Deserializer = Callable[[bytes], Any]
Serializer = Callable[[Any], bytes]

_RPCS: Final[list[tuple[str, Any, Any]]] = [
    ("ServerLive", pb.ServerLiveRequest, pb.ServerLiveResponse),
    ("ServerReady", pb.ServerReadyRequest, pb.ServerReadyResponse),
    ("ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse),
    ("ServerMetadata", pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    ("ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    ("ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse),
    ("ModelConfig", pb.ModelConfigRequest, pb.ModelConfigResponse),
    ("ModelStatistics", pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    ("RepositoryIndex", pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    ("RepositoryModelLoad", pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    ("RepositoryModelUnload", pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
]

RPC_TYPES: Final[dict[str, tuple[Deserializer, Serializer]]] = {
    name: (request.FromString, response.SerializeToString) for name, request, response in _RPCS
}
"""RPC name -> (request parser, response serializer)."""

SERVICE: Final = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


# -- small requests and responses ------------------------------------------------------------


def model_ref(request: Any) -> tuple[str, str | None]:
    """(model, version or None) of a request naming a model by ``name``/``version``."""
    return request.name, request.version or None


def model_label(request: Any) -> tuple[str, str]:
    """(model, version) for metrics and the access log; empty when the RPC names none."""
    name = getattr(request, "model_name", None)
    if name is not None:  # ModelInfer and the repository RPCs (these have no version)
        return name, getattr(request, "model_version", "")
    return getattr(request, "name", ""), getattr(request, "version", "")


def live_response(live: bool) -> pb.ServerLiveResponse:
    return pb.ServerLiveResponse(live=live)


def ready_response(ready: bool) -> pb.ServerReadyResponse:
    return pb.ServerReadyResponse(ready=ready)


def model_ready_response(ready: bool) -> pb.ModelReadyResponse:
    return pb.ModelReadyResponse(ready=ready)


def server_metadata_response(meta: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=meta.name, version=meta.version, extensions=meta.extensions)


def model_metadata_response(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=meta.versions,
        platform=meta.platform,
        inputs=[_tensor_metadata(t) for t in meta.inputs],
        outputs=[_tensor_metadata(t) for t in meta.outputs],
    )


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(name=spec.name, datatype=spec.datatype, shape=spec.shape)


# -- inference -------------------------------------------------------------------------------


def decode_infer_request(msg: pb.ModelInferRequest, *, max_elements: int, time_remaining: float | None) -> InferRequest:
    """An :class:`InferRequest` from a ``ModelInferRequest``.

    ``time_remaining`` (seconds, from the call's deadline) becomes the V2 ``timeout``
    parameter (microseconds), shortening any the client sent, so that the batcher gives up
    when the caller does.
    """
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise InvalidInputError(
            f"{len(raw)} raw_input_contents for {len(msg.inputs)} inputs; send one per input, in order"
        )
    inputs = [
        Tensor(
            name=t.name,
            datatype=t.datatype,
            data=_input_array(t, raw[i] if raw else None, max_elements),
            parameters=_parameters(t.parameters),
        )
        for i, t in enumerate(msg.inputs)
    ]
    outputs = [RequestedOutput(name=o.name, parameters=_parameters(o.parameters)) for o in msg.outputs]
    return InferRequest(
        inputs=inputs,
        id=msg.id or None,
        parameters=_with_deadline(_parameters(msg.parameters), time_remaining),
        outputs=outputs or None,
    )


def _input_array(t: pb.ModelInferRequest.InferInputTensor, raw: bytes | None, max_elements: int) -> np.ndarray:
    shape = list(t.shape)
    if raw is not None:
        if t.HasField("contents"):
            raise InvalidInputError(f"input {t.name!r} has both contents and raw_input_contents")
        return array_from_bytes(t.name, t.datatype, shape, raw, max_elements)
    count = element_count(t.name, shape, max_elements)
    field, wire = _typed_field(t.name, t.datatype)
    values = getattr(t.contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input {t.name!r}: {len(values)} values in contents.{field}, but shape {shape} "
            f"of {t.datatype} needs {count}"
        )
    if t.datatype == "BYTES":
        return np.fromiter(values, dtype=object, count=count).reshape(shape)
    # Slicing a repeated field yields a list, which numpy converts fastest (measured).
    array = np.array(values[:], dtype=wire)
    target = dtype_of(t.datatype)
    if target != wire:
        array = _narrow(t.name, array, target)
    return array.reshape(shape)


def _typed_field(name: str, datatype: str) -> tuple[str, np.dtype]:
    found = _TYPED.get(datatype)
    if found is None:
        dtype_of(datatype)  # raises for an unknown datatype
        raise InvalidInputError(f"input {name!r}: {datatype} data must be sent in raw_input_contents")
    return found


def _narrow(name: str, array: np.ndarray, target: np.dtype) -> np.ndarray:
    info = np.iinfo(target)
    if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
        raise InvalidInputError(f"input {name!r}: a value is out of range for {target.name}")
    return array.astype(target)


def _with_deadline(params: Parameters | None, time_remaining: float | None) -> Parameters | None:
    if time_remaining is None:
        return params
    if time_remaining <= 0:
        raise DeadlineExceededError("the call's deadline passed before inference started")
    deadline_us = max(1, int(time_remaining * 1e6))
    params = dict(params) if params else {}
    asked = params.get("timeout")
    # A valid, shorter timeout from the client stands; an invalid one is left for the data
    # plane to refuse with its usual message.
    if asked is None or (isinstance(asked, int | float) and not isinstance(asked, bool) and asked > deadline_us):
        params["timeout"] = deadline_us
    return params


def encode_infer_response(response: InferResponse, request: InferRequest) -> pb.ModelInferResponse:
    """A ``ModelInferResponse``: raw output contents unless the client asked for typed ones."""
    msg = pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version or "",
        id=response.id or "",
    )
    if response.parameters:
        _set_parameters(msg.parameters, response.parameters)
    typed = _wants_typed(request) and all(t.datatype in _TYPED for t in response.outputs)
    for tensor in response.outputs:
        out = msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
        if tensor.parameters:
            _set_parameters(out.parameters, tensor.parameters)
        if typed:
            _fill_contents(out.contents, tensor)
        else:
            msg.raw_output_contents.append(_raw_bytes(tensor))
    return msg


def _wants_typed(request: InferRequest) -> bool:
    if request.parameters and request.parameters.get("binary_data_output") is False:
        return True
    outputs = request.outputs
    return bool(outputs) and all(
        o.parameters is not None and o.parameters.get("binary_data") is False for o in outputs or ()
    )


def _raw_bytes(tensor: Tensor) -> bytes:
    wire = array_to_bytes(tensor.datatype, tensor.data)
    # protobuf needs bytes of its own: this is the one copy of the output.
    return wire if isinstance(wire, bytes) else wire.tobytes()


def _fill_contents(contents: pb.InferTensorContents, tensor: Tensor) -> None:
    field, _ = _TYPED[tensor.datatype]
    flat = tensor.data.ravel()
    if tensor.datatype == "BYTES":
        contents.bytes_contents.extend([as_bytes(item) for item in flat])
    else:
        # tolist() hands protobuf Python scalars: several times faster than numpy scalars.
        getattr(contents, field).extend(flat.tolist())


# -- parameters ------------------------------------------------------------------------------


def _parameters(params: Mapping[str, Any]) -> Parameters | None:
    if not params:
        return None
    out: Parameters = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def _set_parameters(target: MutableMapping[str, Any], params: Parameters) -> None:
    for key, value in params.items():
        slot = target[key]
        if isinstance(value, bool):
            slot.bool_param = value
        elif isinstance(value, int):
            if value > _INT64_MAX:
                slot.uint64_param = value
            else:
                slot.int64_param = value
        elif isinstance(value, float):
            slot.double_param = value
        else:
            slot.string_param = str(value)


# -- configuration and statistics ------------------------------------------------------------


def model_config_response(manifest: Manifest, platform: str) -> pb.ModelConfigResponse:
    """Triton's ModelConfig, as far as a manifest says: enough for tritonclient tooling."""
    batched = manifest.batched
    config = pb.ModelConfig(
        name=manifest.name,
        platform=platform,
        backend=manifest.runtime,
        max_batch_size=manifest.batching.max_batch_size,
        input=[
            pb.ModelInput(
                name=t.name,
                data_type=_config_type(t.datatype),
                dims=_dims(t, batched),
                optional=t.optional,
            )
            for t in manifest.inputs
        ],
        output=[
            pb.ModelOutput(name=t.name, data_type=_config_type(t.datatype), dims=_dims(t, batched))
            for t in manifest.outputs
        ],
        instance_group=[
            pb.ModelInstanceGroup(
                count=manifest.instances,
                kind=pb.ModelInstanceGroup.KIND_GPU if manifest.resources.gpu else pb.ModelInstanceGroup.KIND_CPU,
            )
        ],
    )
    if batched:
        config.dynamic_batching.max_queue_delay_microseconds = manifest.batching.max_queue_delay_us
    return pb.ModelConfigResponse(config=config)


def _config_type(datatype: str) -> str:
    # Triton's config calls BYTES "STRING"; protobuf takes the enum value's name.
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _dims(t: TensorSignature, batched: bool) -> list[int]:
    # Triton's config leaves the batch dimension out when max_batch_size > 0.
    return list(t.shape[1:] if batched and t.shape else t.shape)


def model_statistics_response(stats: list[ModelStats]) -> pb.ModelStatisticsResponse:
    """Triton's statistics message. ``ModelStats`` mirrors it field for field, so this goes
    through plain data rather than naming every field twice (statistics are not hot)."""
    return pb.ModelStatisticsResponse(model_stats=[_model_statistics(s) for s in stats])


def _model_statistics(stats: ModelStats) -> pb.ModelStatistics:
    data = msgspec.to_builtins(stats)
    by_size = data.get("batch_stats")
    if isinstance(by_size, dict):
        data["batch_stats"] = [by_size[k] for k in sorted(by_size)]
    return json_format.ParseDict(data, pb.ModelStatistics(), ignore_unknown_fields=True)


# -- repository extension --------------------------------------------------------------------


def index_ready_only(request: pb.RepositoryIndexRequest) -> bool:
    return request.ready


def repository_index_response(rows: list[RepositoryEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state, reason=r.reason)
            for r in rows
        ]
    )


def load_model_name(request: pb.RepositoryModelLoadRequest) -> str:
    """The model to load; refuses Triton's config/file overrides, as REST does."""
    unsupported = sorted(k for k in request.parameters if k != "unload_dependents")
    if unsupported:
        raise InvalidInputError(f"load parameters {unsupported} are not supported; edit model.yaml and load again")
    return request.model_name


def unload_model_name(request: pb.RepositoryModelUnloadRequest) -> str:
    return request.model_name


def load_response() -> pb.RepositoryModelLoadResponse:
    return pb.RepositoryModelLoadResponse()


def unload_response() -> pb.RepositoryModelUnloadResponse:
    return pb.RepositoryModelUnloadResponse()
