"""Write the typed per-RPC client methods (sync and async) from the contract's descriptors.

protos/generate.py calls `render(descriptor_set)` and writes the result as
clients/pullbroker_client/generated/broker_rpc.py. Each RPC becomes one method per class,
in snake_case, whose parameters are the request's fields in field order (defaults are the
proto zero values; message and oneof fields default to None), plus keyword-only
`request_id` and `timeout`. The return type is the RPC's response message, except where
CONVERTED names a hand-written conversion (a token becomes a Secret before anyone sees it).

Like Temporal's generated service client: the sync and async surfaces come from one
template, so they cannot drift; only conveniences that are not RPCs are written by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.protobuf import descriptor_pb2

PACKAGE = "pullbroker.v1"
# RPC -> (return type, function in pullbroker_client.broker_messages that makes it).
CONVERTED = {
    "IssuePullToken": ("IssuedPullToken", "issued_token"),
    "IssueRegistryLogin": ("IssuedRegistryLogin", "issued_login"),
}
# Request fields that carry a secret: taken as a Secret, revealed only into the message.
SECRET_FIELDS = frozenset({"service_account_token"})

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    _F.TYPE_STRING: ("str", '""'),
    _F.TYPE_BOOL: ("bool", "False"),
    _F.TYPE_BYTES: ("bytes", 'b""'),
    _F.TYPE_DOUBLE: ("float", "0.0"),
    _F.TYPE_FLOAT: ("float", "0.0"),
}
_WELL_KNOWN = {
    ".google.protobuf.Timestamp": ("timestamp_pb2", "from google.protobuf import timestamp_pb2"),
    ".google.protobuf.Duration": ("duration_pb2", "from google.protobuf import duration_pb2"),
}
_FIELD_MASK = ".google.protobuf.FieldMask"


@dataclass(frozen=True)
class _Param:
    name: str
    annotation: str
    default: str
    assign_after: bool  # oneof members are set only when given
    value: str  # the expression that goes into the message
    is_message: bool = False  # set with CopyFrom (scalars and enums are assigned)


@dataclass(frozen=True)
class _Rpc:
    service: str
    stub_attr: str
    name: str
    module: str
    request: str
    response: str
    streaming: bool
    params: tuple[_Param, ...]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Types:
    """Fully qualified proto names -> the Python expression naming them."""

    def __init__(self, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
        self.names: dict[str, str] = {}
        self.enum_zero: dict[str, str] = {}
        for file in files:
            if file.package != PACKAGE:
                continue
            module = file.name.rsplit("/", 1)[-1].removesuffix(".proto") + "_pb2"
            for message in file.message_type:
                self.names[f".{PACKAGE}.{message.name}"] = f"{module}.{message.name}"
            for enum in file.enum_type:
                self.names[f".{PACKAGE}.{enum.name}"] = f"{module}.{enum.name}"
                self.enum_zero[f".{PACKAGE}.{enum.name}"] = f"{module}.{enum.value[0].name}"
        self.imports: set[str] = set()

    def module_of(self, type_name: str) -> str:
        return self.names[type_name].split(".", 1)[0]

    def param(self, field: descriptor_pb2.FieldDescriptorProto, in_oneof: bool) -> _Param:
        name = field.name
        if field.label == _F.LABEL_REPEATED:
            inner, _ = self._type(field)
            return _Param(name, f"Sequence[{inner}]", "()", False, name)
        if name in SECRET_FIELDS:
            value = f"{name}.reveal() if {name} is not None else " + '""'
            return _Param(name, "Secret | None", "None", False, value)
        if field.type_name == _FIELD_MASK:
            self.imports.add("from google.protobuf import field_mask_pb2")
            annotation = "Sequence[str] | field_mask_pb2.FieldMask"
            return _Param(name, annotation, "()", False, f"field_mask({name})")
        annotation, default = self._type(field)
        if in_oneof or field.type == _F.TYPE_MESSAGE:
            is_message = field.type == _F.TYPE_MESSAGE
            return _Param(name, f"{annotation} | None", "None", in_oneof, name, is_message)
        return _Param(name, annotation, default, False, name)

    def _type(self, field: descriptor_pb2.FieldDescriptorProto) -> tuple[str, str]:
        if field.type in _SCALARS:
            return _SCALARS[field.type]
        if field.type == _F.TYPE_ENUM:
            return f"{self.names[field.type_name]}.ValueType", self.enum_zero[field.type_name]
        if field.type == _F.TYPE_MESSAGE:
            if field.type_name in _WELL_KNOWN:
                module, statement = _WELL_KNOWN[field.type_name]
                self.imports.add(statement)
                return f"{module}.{field.type_name.rsplit('.', 1)[-1]}", "None"
            return self.names[field.type_name], "None"
        return "int", "0"  # every integer type


def _rpcs(files: list[descriptor_pb2.FileDescriptorProto], types: _Types) -> list[_Rpc]:
    messages = {
        f".{PACKAGE}.{m.name}": m for f in files if f.package == PACKAGE for m in f.message_type
    }
    rpcs = []
    for file in files:
        if file.package != PACKAGE:
            continue
        for service in file.service:
            for method in service.method:
                request = messages[method.input_type]
                params = tuple(
                    types.param(
                        field,
                        field.HasField("oneof_index") and not field.proto3_optional,
                    )
                    for field in request.field
                )
                rpcs.append(
                    _Rpc(
                        service=service.name,
                        stub_attr="_" + snake(service.name),
                        name=method.name,
                        module=types.module_of(method.input_type),
                        request=types.names[method.input_type],
                        response=types.names[method.output_type],
                        streaming=method.server_streaming,
                        params=params,
                    )
                )
    return rpcs


def _signature(rpc: _Rpc, is_async: bool) -> list[str]:
    prefix = "async def" if is_async else "def"
    if rpc.streaming:
        iterator = "AsyncIterator" if is_async else "Iterator"
        returns = f"{iterator}[{rpc.response}]"
    elif rpc.name in CONVERTED:
        returns = CONVERTED[rpc.name][0]
    else:
        returns = rpc.response
    lines = [f"    {prefix} {snake(rpc.name)}(", "        self,"]
    lines += [f"        {p.name}: {p.annotation} = {p.default}," for p in rpc.params]
    lines += [
        "        *,",
        "        request_id: str | None = None,",
        "        timeout: float | None = None,",
        f"    ) -> {returns}:",
        f'        """{rpc.service}.{rpc.name}."""',
    ]
    return lines


def _body(rpc: _Rpc, is_async: bool) -> list[str]:
    direct = [p for p in rpc.params if not p.assign_after]
    args = ", ".join(f"{p.name}={p.value}" for p in direct)
    lines = [f"        request = {rpc.request}({args})"]
    for p in rpc.params:
        if p.assign_after:
            lines.append(f"        if {p.name} is not None:")
            if p.is_message:
                lines.append(f"            request.{p.name}.CopyFrom({p.name})")
            else:
                lines.append(f"            request.{p.name} = {p.name}")
    call = f"self.{rpc.stub_attr}.{rpc.name}, request, request_id, timeout"
    if rpc.streaming:
        if is_async:
            lines += [f"        async for item in self._stream({call}):", "            yield item"]
        else:
            lines.append(f"        yield from self._stream({call})")
        return lines
    awaited = "await " if is_async else ""
    result = f"{awaited}self._unary({call})"
    if rpc.name in CONVERTED:
        result = f"{CONVERTED[rpc.name][1]}({result})"
    lines.append(f"        return {result}")
    return lines


def _class(rpcs: list[_Rpc], is_async: bool) -> list[str]:
    name = "AsyncBrokerRpc" if is_async else "BrokerRpc"
    base = "AsyncRpcCaller" if is_async else "RpcCaller"
    channel = "grpc.aio.Channel" if is_async else "grpc.Channel"
    kind = "grpc.aio" if is_async else "blocking"
    services = sorted({(r.stub_attr, r.module, r.service) for r in rpcs})
    lines = [
        f"class {name}({base}):",
        f'    """Every RPC of {PACKAGE} as a typed method ({kind})."""',
        "",
        f"    def __init__(self, channel: {channel}, address: str, timeout: float) -> None:",
        "        super().__init__(address, timeout)",
    ]
    lines += [f"        self.{a} = {m}_grpc.{s}Stub(channel)" for a, m, s in services]
    for rpc in rpcs:
        lines += ["", *_signature(rpc, is_async), *_body(rpc, is_async)]
    return lines


def render(descriptor_set: bytes) -> str:
    """The generated module's source."""
    files = list(descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file)
    types = _Types(files)
    rpcs = _rpcs(files, types)
    modules = sorted({r.module for r in rpcs} | {n.split(".")[0] for n in types.names.values()})
    header = [
        '"""Typed per-RPC methods of the broker clients. Generated by protos/generate.py from',
        'protos/pullbroker/v1; do not edit (see protos/rpc_methods.py)."""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import AsyncIterator, Iterator, Sequence",
        "",
        "import grpc",
        *sorted(types.imports),
        "from pullbroker.v1 import (",
        *[f"    {m}," for m in modules],
        *[f"    {m}_grpc," for m in sorted({r.module for r in rpcs})],
        ")",
        "",
        "from pullbroker_client.broker_call import AsyncRpcCaller, RpcCaller",
        "from pullbroker_client.broker_messages import (",
        *[f"    {name}," for name in sorted({n for pair in CONVERTED.values() for n in pair})],
        "    field_mask,",
        ")",
        "from pullbroker_client.secret import Secret",
        "",
        '__all__ = ["AsyncBrokerRpc", "BrokerRpc"]',
    ]
    body = [*_class(rpcs, False), "", "", *_class(rpcs, True)]
    return "\n".join([*header, "", "", *body]) + "\n"
