"""Which minter serves which registry kind.

Adding a kind is one new minter module (e.g. `minting/ecr.py`) and one row where main wires
this table. Kinds without a minter are refused at creation with a message saying so, rather
than accepted and failing at the first pull.
"""

from __future__ import annotations

from collections.abc import Mapping

from pullbroker_service.domain.errors import InvalidRegistry
from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.base import Minter

# Kinds whose registries speak the Docker token protocol (ping -> Bearer challenge -> token
# endpoint). Docker Hub, GHCR, Quay and Harbor do too, but get their own checks in a later
# issue before they are switched on here.
BEARER_KINDS = frozenset({RegistryKind.GENERIC, RegistryKind.PUBLIC})


class MinterRegistry:
    """A kind -> Minter table."""

    def __init__(self, minters: Mapping[RegistryKind, Minter]) -> None:
        self._minters = dict(minters)

    @classmethod
    def with_bearer(cls, bearer: Minter) -> MinterRegistry:
        """The default table: the token-endpoint minter for every bearer kind."""
        return cls(dict.fromkeys(BEARER_KINDS, bearer))

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
        """Close every distinct minter that holds connections."""
        seen: set[int] = set()
        for minter in self._minters.values():
            close = getattr(minter, "aclose", None)
            if close is not None and id(minter) not in seen:
                seen.add(id(minter))
                await close()
