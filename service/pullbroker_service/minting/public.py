"""Kind public: anonymous tokens from any token-endpoint registry (Docker Hub by default)."""

from __future__ import annotations

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.token_kind import TokenKind
from pullbroker_service.minting.upstream import Hints

PUBLIC = TokenKind(
    RegistryKind.PUBLIC,
    "public registry",
    Hints(
        rejected="the registry does not serve this repository anonymously: register a "
        "credential for it (another kind)",
        not_allowed="the repository is private or does not exist: register a credential",
    ),
)
