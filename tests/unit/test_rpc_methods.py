"""protos/rpc_methods.py, the generator of the typed per-RPC client methods, on a synthetic
proto: how a oneof member gets into the request depends on its proto type."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from google.protobuf import descriptor_pb2

PROTOS = Path(__file__).resolve().parents[2] / "protos"
F = descriptor_pb2.FieldDescriptorProto


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("rpc_methods", PROTOS / "rpc_methods.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("rpc_methods", module)
    spec.loader.exec_module(module)
    return module


def descriptor_set() -> bytes:
    """pullbroker.v1.Fake/Do(DoRequest) with a oneof of an enum, a message and a string."""
    file = descriptor_pb2.FileDescriptorProto(name="pullbroker/v1/fake.proto")
    file.package = "pullbroker.v1"
    file.syntax = "proto3"
    kind = file.enum_type.add(name="Kind")
    kind.value.add(name="KIND_UNSPECIFIED", number=0)
    kind.value.add(name="KIND_A", number=1)
    file.message_type.add(name="Sub").field.add(
        name="x", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL
    )
    file.message_type.add(name="DoResponse")
    request = file.message_type.add(name="DoRequest")
    request.oneof_decl.add(name="choice")
    members = [
        ("kind", F.TYPE_ENUM, ".pullbroker.v1.Kind"),
        ("sub", F.TYPE_MESSAGE, ".pullbroker.v1.Sub"),
        ("text", F.TYPE_STRING, ""),
    ]
    for number, (name, type_, type_name) in enumerate(members, start=1):
        field = request.field.add(name=name, number=number, type=type_, label=F.LABEL_OPTIONAL)
        field.oneof_index = 0
        if type_name:
            field.type_name = type_name
    file.service.add(name="Fake").method.add(
        name="Do", input_type=".pullbroker.v1.DoRequest", output_type=".pullbroker.v1.DoResponse"
    )
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()


class TestOneofMembers:
    def test_messages_are_copied_enums_and_scalars_assigned(self) -> None:
        """An enum member is assigned like a scalar (CopyFrom on an enum fails at run time);
        a message member is copied in."""
        source = generator().render(descriptor_set())
        assert "request.kind = kind" in source
        assert "request.text = text" in source
        assert "request.sub.CopyFrom(sub)" in source
        assert "request.kind.CopyFrom" not in source
        compile(source, "broker_rpc.py", "exec")
