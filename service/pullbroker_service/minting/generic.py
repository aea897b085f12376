"""Kind generic: any Docker v2 registry that challenges with Bearer (or Basic, see bearer.py)."""

from __future__ import annotations

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.token_kind import TokenKind

GENERIC = TokenKind(RegistryKind.GENERIC, "registry")
