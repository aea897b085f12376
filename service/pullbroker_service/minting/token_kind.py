"""What one token-endpoint registry kind adds to the Docker token protocol.

The protocol (bearer.py) is the same for Docker Hub, GHCR, Quay, Harbor and any distribution
registry. A kind adds only its words and small conventions: the advice its errors give, and
how a repository a person types is spelled there. A new token-endpoint kind is one module
defining a TokenKind, plus its row in registry_of_kinds.TOKEN_KINDS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.upstream import DEFAULT_HINTS, Hints


@dataclass(frozen=True)
class TokenKind:
    """A token-endpoint kind's conventions.

    name: how people call the registry ("Docker Hub"), for messages.
    hints: what to check after each kind of failure.
    single_name_namespace: where a one-component repository lives ("library" on Docker
    Hub: `nginx` is `library/nginx`); "" keeps names as typed.
    """

    kind: RegistryKind
    name: str
    hints: Hints = field(default=DEFAULT_HINTS)
    single_name_namespace: str = ""

    def repository(self, name: str) -> str:
        """`name` as this registry spells it (a person's input; parsed refs are normalised)."""
        if self.single_name_namespace and name and "/" not in name:
            return f"{self.single_name_namespace}/{name}"
        return name
