"""PolicyService (role admin): explains the live policy's decision for an identity and image."""

from __future__ import annotations

from typing import Protocol

from pullbroker.v1 import policy_pb2, policy_pb2_grpc

from pullbroker_service.api.context import Context
from pullbroker_service.app.access import AccessExplanation
from pullbroker_service.domain.errors import InvalidArgument

MAX_FIELD = 4096


class AccessChecking(Protocol):
    """What the servicer needs of `pullbroker_service.app.access.AccessChecker`."""

    async def check(self, identity: str, image: str, registry: str | None) -> AccessExplanation: ...


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, access: AccessChecking) -> None:
        self._access = access

    async def CheckAccess(
        self, request: policy_pb2.CheckAccessRequest, context: Context
    ) -> policy_pb2.CheckAccessResponse:
        identity, image = request.identity.strip(), request.image.strip()
        if not image:
            raise InvalidArgument("image is required, e.g. ghcr.io/acme/app:1.2")
        if len(identity) > MAX_FIELD or len(image) > MAX_FIELD:
            raise InvalidArgument(f"identity and image are at most {MAX_FIELD} characters")
        found = await self._access.check(identity, image, request.registry.strip() or None)
        return policy_pb2.CheckAccessResponse(
            allowed=found.allowed,
            reason=found.reason,
            rule=found.rule,
            roles=sorted(found.roles),
            registry=found.registry,
            repository=found.repository,
        )
