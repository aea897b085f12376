"""The port every per-kind minter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pullbroker_service.domain.model import Credential, MintedToken, RegistryRecord


def pull_scope(repository: str) -> str:
    """The only scope the broker ever asks a registry for ("" when no repository is named)."""
    return f"repository:{repository}:pull" if repository else ""


@dataclass(frozen=True)
class ProbeResult:
    """What TestConnection reports. outcome: ok | credential_rejected | not_allowed |
    unreachable | tls_failure | rate_limited | unsupported_auth."""

    outcome: str
    message: str
    latency_seconds: float
    auth_scheme: str


class Minter(Protocol):
    """Mints pull tokens for one registry kind. Raises UpstreamError subclasses."""

    async def mint(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedToken:
        """A token allowing pull (and only pull) on `repository` of `registry`."""
        ...

    async def probe(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> ProbeResult:
        """Ping, challenge and token request; classify the outcome instead of raising."""
        ...
