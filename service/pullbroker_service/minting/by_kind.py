"""Which minter serves which registry kind.

Token-endpoint kinds share one BearerMinter, each seen through its own conventions (a
`TokenKind` in token_kinds.py); a new one is a TokenKind plus a row in TOKEN_KINDS. The
cloud kinds have minters of their own (ecr.py, google.py, azure.py). A table built without
some kind refuses records of that kind at creation, rather than accepting them and failing
at the first pull.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.base import Minter
from pullbroker_service.minting.bearer import BearerMinter
from pullbroker_service.minting.token_kinds import (
    DOCKER_HUB,
    GENERIC,
    GHCR,
    HARBOR,
    PUBLIC,
    QUAY,
    TokenKind,
)

TOKEN_KINDS: tuple[TokenKind, ...] = (GENERIC, PUBLIC, DOCKER_HUB, GHCR, QUAY, HARBOR)
"""The kinds whose registries speak the Docker token protocol (ping -> challenge -> token)."""

BEARER_KINDS = frozenset(k.kind for k in TOKEN_KINDS)

CLOUD_KINDS = frozenset({RegistryKind.ECR, RegistryKind.GCR, RegistryKind.GAR, RegistryKind.ACR})


class MintersByKind:
    """A kind -> Minter table."""

    def __init__(
        self, minters: Mapping[RegistryKind, Minter], *, shared: Sequence[object] = ()
    ) -> None:
        """`shared`: objects the minters use that need closing too (a KindMinter's base)."""
        self._minters = dict(minters)
        self._shared = list(shared)

    @classmethod
    def with_bearer(cls, bearer: Minter) -> MintersByKind:
        """`bearer` (any Minter, e.g. a test double) for generic and public only."""
        return cls(dict.fromkeys((RegistryKind.GENERIC, RegistryKind.PUBLIC), bearer))

    @classmethod
    def default(
        cls,
        bearer: BearerMinter,
        *,
        ecr: Minter | None = None,
        google: Minter | None = None,
        azure: Minter | None = None,
    ) -> MintersByKind:
        """Every token-endpoint kind on `bearer`, and the cloud minters that are given.

        `google` serves gcr and gar. A cloud minter left out leaves its kinds unsupported.
        """
        minters: dict[RegistryKind, Minter] = {k.kind: bearer.for_kind(k) for k in TOKEN_KINDS}
        if ecr is not None:
            minters[RegistryKind.ECR] = ecr
        if google is not None:
            minters[RegistryKind.GCR] = google
            minters[RegistryKind.GAR] = google
        if azure is not None:
            minters[RegistryKind.ACR] = azure
        return cls(minters, shared=[bearer])

    def supports(self, kind: RegistryKind) -> bool:
        return kind in self._minters

    def kinds(self) -> frozenset[RegistryKind]:
        return frozenset(self._minters)

    def for_kind(self, kind: RegistryKind) -> Minter:
        try:
            return self._minters[kind]
        except KeyError:
            supported = ", ".join(sorted(self._minters))
            raise InvalidRegistry(
                f"registry kind {kind} is not supported by this broker yet (supported: {supported})"
            ) from None

    async def aclose(self) -> None:
        """Close every distinct minter (and shared base) that holds connections."""
        seen: set[int] = set()
        for minter in [*self._minters.values(), *self._shared]:
            close = getattr(minter, "aclose", None)
            if close is not None and id(minter) not in seen:
                seen.add(id(minter))
                await close()
