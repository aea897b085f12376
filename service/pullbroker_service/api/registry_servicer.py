"""RegistryService: thin proto <-> domain glue over the Registries use cases (role: admin)."""

from __future__ import annotations

from typing import Protocol

from pullbroker.v1 import registry_pb2, registry_pb2_grpc

from pullbroker_service.api import convert
from pullbroker_service.api.context import Context
from pullbroker_service.api.interceptors import current_caller
from pullbroker_service.domain.errors import InvalidArgument
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import KindInfo, RegistrySpec
from pullbroker_service.domain.model import Credential, RegistryRecord
from pullbroker_service.minting.base import ProbeResult

UPDATABLE_PATHS = ("display_name", "registry_ca_pem", "allow_basic_passthrough", "repositories")


class RegistriesUseCases(Protocol):
    """What the servicer needs of `pullbroker_service.app.registries.Registries`."""

    async def create(
        self, caller: Identity, spec: RegistrySpec, credential: Credential | None, test: bool
    ) -> RegistryRecord: ...

    async def get(self, name: str) -> RegistryRecord: ...

    async def list(self, page_size: int, page_token: str) -> tuple[list[RegistryRecord], str]: ...

    async def update(
        self,
        caller: Identity,
        name: str,
        etag: str,
        *,
        display_name: str | None,
        registry_ca_pem: str | None,
        allow_basic_passthrough: bool | None,
        credential: Credential | None,
        test: bool = True,
        repositories: tuple[str, ...] | None = None,
    ) -> RegistryRecord: ...

    async def rollback(self, caller: Identity, name: str, etag: str) -> RegistryRecord: ...

    def kinds(self) -> tuple[KindInfo, ...]: ...

    async def delete(self, caller: Identity, name: str, etag: str | None) -> None: ...

    async def test(
        self,
        name: str | None,
        spec: RegistrySpec | None,
        credential: Credential | None,
        repository: str,
        *,
        caller: Identity | None = None,
    ) -> ProbeResult: ...


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Each method converts, calls one use case, converts back; errors map in the interceptor."""

    def __init__(self, registries: RegistriesUseCases) -> None:
        self._registries = registries

    async def CreateRegistry(
        self, request: registry_pb2.CreateRegistryRequest, context: Context
    ) -> registry_pb2.Registry:
        if not request.HasField("registry"):
            raise InvalidArgument("registry is required (display_name, type and url)")
        spec = convert.spec_from_proto(request.registry)
        credential = convert.credential_from_proto(
            request.credential, request.HasField("credential")
        )
        record = await self._registries.create(current_caller(), spec, credential, request.test)
        return convert.record_to_proto(record)

    async def GetRegistry(
        self, request: registry_pb2.GetRegistryRequest, context: Context
    ) -> registry_pb2.Registry:
        record = await self._registries.get(_required_name(request.name, "name"))
        return convert.record_to_proto(record)

    async def ListRegistries(
        self, request: registry_pb2.ListRegistriesRequest, context: Context
    ) -> registry_pb2.ListRegistriesResponse:
        records, next_token = await self._registries.list(request.page_size, request.page_token)
        return registry_pb2.ListRegistriesResponse(
            registries=[convert.record_to_proto(r) for r in records],
            next_page_token=next_token,
        )

    async def UpdateRegistry(
        self, request: registry_pb2.UpdateRegistryRequest, context: Context
    ) -> registry_pb2.Registry:
        registry = request.registry
        name = _required_name(registry.name, "registry.name")
        if not registry.etag:
            raise InvalidArgument("registry.etag is required: get the registry and send its etag")
        paths = _mask_paths(request)
        credential = convert.credential_from_proto(
            request.credential, request.HasField("credential")
        )
        if not paths and credential is None:
            raise InvalidArgument(
                "nothing to update: name fields in update_mask "
                f"({', '.join(UPDATABLE_PATHS)}) or send a credential to rotate"
            )
        record = await self._registries.update(
            current_caller(),
            name,
            registry.etag,
            display_name=registry.display_name if "display_name" in paths else None,
            registry_ca_pem=registry.registry_ca_pem if "registry_ca_pem" in paths else None,
            allow_basic_passthrough=(
                registry.allow_basic_passthrough if "allow_basic_passthrough" in paths else None
            ),
            credential=credential,
            test=not request.skip_test,
            repositories=tuple(registry.repositories) if "repositories" in paths else None,
        )
        return convert.record_to_proto(record)

    async def RollbackRegistry(
        self, request: registry_pb2.RollbackRegistryRequest, context: Context
    ) -> registry_pb2.Registry:
        name = _required_name(request.name, "name")
        if not request.etag:
            raise InvalidArgument("etag is required: get the registry and send its etag")
        record = await self._registries.rollback(current_caller(), name, request.etag)
        return convert.record_to_proto(record)

    async def ListRegistryKinds(
        self, request: registry_pb2.ListRegistryKindsRequest, context: Context
    ) -> registry_pb2.ListRegistryKindsResponse:
        return convert.kinds_to_proto(self._registries.kinds())

    async def DeleteRegistry(
        self, request: registry_pb2.DeleteRegistryRequest, context: Context
    ) -> registry_pb2.DeleteRegistryResponse:
        name = _required_name(request.name, "name")
        await self._registries.delete(current_caller(), name, request.etag or None)
        return registry_pb2.DeleteRegistryResponse()

    async def TestConnection(
        self, request: registry_pb2.TestConnectionRequest, context: Context
    ) -> registry_pb2.TestConnectionResponse:
        credential = convert.credential_from_proto(
            request.credential, request.HasField("credential")
        )
        target = request.WhichOneof("target")
        if target == "name":
            name = _required_name(request.name, "name")
            result = await self._registries.test(
                name, None, credential, request.repository, caller=current_caller()
            )
        elif target == "registry":
            spec = convert.spec_from_proto(request.registry)
            result = await self._registries.test(
                None, spec, credential, request.repository, caller=current_caller()
            )
        else:
            raise InvalidArgument(
                "name a saved registry (name) or describe an unsaved one (registry)"
            )
        return convert.probe_to_proto(result)


def _required_name(value: str, field: str) -> str:
    if not value.strip():
        raise InvalidArgument(f"{field} is required: registries/<id> or a display name")
    return value.strip()


def _mask_paths(request: registry_pb2.UpdateRegistryRequest) -> set[str]:
    paths = set(request.update_mask.paths) if request.HasField("update_mask") else set()
    unknown = sorted(paths - set(UPDATABLE_PATHS))
    if unknown:
        raise InvalidArgument(
            f"update_mask path(s) {unknown} cannot be updated; "
            f"allowed: {', '.join(UPDATABLE_PATHS)}"
        )
    return paths
