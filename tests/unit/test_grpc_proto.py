"""Our grpc_service.proto against tritonclient's: same names, numbers and types, field by field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor
from tritonclient.grpc import model_config_pb2, service_pb2

from pinnace.server.grpc.generated import grpc_service_pb2 as pb

OURS = pb.DESCRIPTOR
TRITON = {**service_pb2.DESCRIPTOR.message_types_by_name, **model_config_pb2.DESCRIPTOR.message_types_by_name}
ROOT = Path(__file__).resolve().parents[2]


def _messages() -> list[str]:
    return sorted(OURS.message_types_by_name)


@pytest.mark.parametrize("name", _messages())
def test_message_matches_triton(name: str) -> None:
    _same_fields(OURS.message_types_by_name[name], TRITON[name])


def _same_fields(ours: Descriptor, theirs: Descriptor) -> None:
    for field in ours.fields:
        other = theirs.fields_by_number.get(field.number)
        assert other is not None, f"{ours.full_name}.{field.name}: no field {field.number} in Triton's"
        assert (field.name, field.type, field.is_repeated) == (other.name, other.type, other.is_repeated), (
            f"{ours.full_name}.{field.name} differs from Triton's"
        )
        if field.message_type is not None:
            assert other.message_type is not None
            assert field.message_type.full_name == other.message_type.full_name
            if not field.message_type.GetOptions().map_entry:
                _same_fields(field.message_type, other.message_type)
        if field.enum_type is not None:
            assert other.enum_type is not None
            _same_enum(field.enum_type, other.enum_type)
    for oneof in ours.oneofs:
        fields = {f.name for f in oneof.fields}
        assert fields <= {f.name for f in theirs.oneofs_by_name[oneof.name].fields}


def _same_enum(ours: EnumDescriptor, theirs: EnumDescriptor) -> None:
    assert ours.full_name == theirs.full_name
    for value in ours.values:
        assert theirs.values_by_name[value.name].number == value.number


def test_every_rpc_matches_triton() -> None:
    ours = OURS.services_by_name["GRPCInferenceService"]
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
        assert not method.server_streaming and not method.client_streaming


def test_generated_module_is_up_to_date(tmp_path: Path) -> None:
    """scripts/gen_grpc.sh, run now, writes what is checked in (when grpcio-tools is here)."""
    pytest.importorskip("grpc_tools")
    out = tmp_path / "generated"
    out.mkdir()
    source = ROOT / "src" / "pinnace" / "server" / "grpc"
    protoc = [sys.executable, "-m", "grpc_tools.protoc", f"-I{source}", f"--python_out={out}"]
    subprocess.run([*protoc, str(source / "grpc_service.proto")], check=True, capture_output=True)
    fresh = (out / "grpc_service_pb2.py").read_text()
    checked_in = (source / "generated" / "grpc_service_pb2.py").read_text()
    # Compare the serialised descriptor only: the script edits the lines around it.
    assert _descriptor_bytes(fresh) == _descriptor_bytes(checked_in)


def _descriptor_bytes(module_text: str) -> str:
    start = module_text.index("AddSerializedFile(")
    return module_text[start : module_text.index("\n", start)]
