"""Kind quay: quay.io or a self-hosted Quay (explicit url), tokens from <host>/v2/auth.

Credentials: a user name and password or encrypted password, a robot account
`NAMESPACE+ROBOT` and its token, or `$oauthtoken` and an OAuth application token.
"""

from __future__ import annotations

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.token_kind import TokenKind
from pullbroker_service.minting.upstream import Hints

QUAY = TokenKind(
    RegistryKind.QUAY,
    "Quay",
    Hints(
        rejected="check the user name (a robot account is NAMESPACE+ROBOT) and its token or "
        "encrypted password; a regenerated robot token replaces the old one",
        not_allowed="give the user or robot Read permission on the repository (repository "
        "settings, or a team with read access)",
    ),
)
