"""Kind ghcr: GitHub Container Registry (ghcr.io), tokens from ghcr.io/token.

The credential is a GitHub user name and a personal access token (classic) with
read:packages; packages of an organization also need the user to have read access to the
package (or, with SSO, the token authorised for the organization). GHCR's tokens are opaque,
so "not allowed" shows at the registry rather than in the token.
"""

from __future__ import annotations

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.token_kind import TokenKind
from pullbroker_service.minting.upstream import Hints

GHCR = TokenKind(
    RegistryKind.GHCR,
    "GitHub Container Registry",
    Hints(
        rejected="check the GitHub user name and that the personal access token is not "
        "expired and has the read:packages scope (and SSO authorisation for the org)",
        not_allowed="give the token's user read access to the package (package settings, "
        "Manage access), or check the owner and package name",
        not_found="check the owner (user or organization) and package name, that they are "
        "lowercase, and the tag",
    ),
)
