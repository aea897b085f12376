"""PullService: short-lived, repository-scoped pull tokens for nodes (role: node)."""

from __future__ import annotations

from typing import Any, Protocol

from pullbroker.v1 import pull_pb2_grpc

from pullbroker_service.api import convert
from pullbroker_service.api.interceptors import current_caller
from pullbroker_service.domain.errors import InvalidArgument
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import MintedToken, RegistryRecord

MAX_IMAGE_LENGTH = 4096


class TokenIssuing(Protocol):
    """What the servicer needs of `pullbroker_service.app.tokens.TokenIssuer`."""

    async def issue(
        self, caller: Identity, image: str, registry: str | None, force_refresh: bool
    ) -> tuple[MintedToken, RegistryRecord]: ...


class PullServicer(pull_pb2_grpc.PullServiceServicer):
    def __init__(self, issuer: TokenIssuing) -> None:
        self._issuer = issuer

    async def IssuePullToken(self, request: Any, context: Any) -> Any:  # noqa: N802
        image = request.image.strip()
        if not image:
            raise InvalidArgument("image is required, e.g. ghcr.io/acme/app:1.2")
        if len(image) > MAX_IMAGE_LENGTH:
            raise InvalidArgument(f"image is longer than {MAX_IMAGE_LENGTH} characters")
        token, record = await self._issuer.issue(
            current_caller(), image, request.registry.strip() or None, request.force_refresh
        )
        return convert.token_to_proto(token, record)
