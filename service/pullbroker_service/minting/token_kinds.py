"""What one token-endpoint registry kind adds to the Docker token protocol.

The protocol (bearer.py) is the same for Docker Hub, GHCR, Quay, Harbor and any distribution
registry. A kind adds only its words and small conventions: the advice its errors give, and
how a repository a person types is spelled there. Every such kind is one TokenKind below;
a new one is one more, plus its row in by_kind.TOKEN_KINDS.
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


# Kind docker_hub: registry-1.docker.io, tokens from auth.docker.io.
#
# Image references name `docker.io`; one-component names live under `library/` (official
# images). The credential is a Docker ID and a personal (or organization) access token; with
# two-factor authentication the account password does not work. Docker Hub counts pulls per
# account in a window and announces it in `ratelimit-*` headers (see upstream_backoff.py).
# It answers a repository the credential cannot see - private, or not there at all - the
# same way.
DOCKER_HUB = TokenKind(
    RegistryKind.DOCKER_HUB,
    "Docker Hub",
    Hints(
        rejected="use the Docker ID (not the e-mail address) and a personal access token "
        "with at least read access; the account password fails with two-factor auth",
        not_allowed="the repository is private to another namespace or does not exist "
        "(Docker Hub does not say which): check the namespace, that names are lowercase, "
        "and that the token's user is a member with read access",
        not_found="check the namespace (official images are library/NAME), that the name "
        "is lowercase, and the tag",
    ),
    single_name_namespace="library",
)


# Kind ghcr: GitHub Container Registry (ghcr.io), tokens from ghcr.io/token.
#
# The credential is a GitHub user name and a personal access token (classic) with
# read:packages; packages of an organization also need the user to have read access to the
# package (or, with SSO, the token authorised for the organization). GHCR's tokens are opaque,
# so "not allowed" shows at the registry rather than in the token.
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


# Kind quay: quay.io or a self-hosted Quay (explicit url), tokens from <host>/v2/auth.
#
# Credentials: a user name and password or encrypted password, a robot account
# `NAMESPACE+ROBOT` and its token, or `$oauthtoken` and an OAuth application token.
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


# Kind harbor: a self-hosted Harbor (url required), tokens from <host>/service/token.
#
# Credentials: a Harbor user and password, or a robot account - `robot$NAME` (system robot) or
# `robot$PROJECT+NAME` (project robot) - and its secret. Repositories are PROJECT/NAME.
HARBOR = TokenKind(
    RegistryKind.HARBOR,
    "Harbor",
    Hints(
        rejected="check the user name (robot accounts: the full robot$... name) and its "
        "secret; robot secrets expire and are replaced when refreshed",
        not_allowed="add the user or robot to the project with at least pull permission "
        "(Limited Guest or a robot with repository pull)",
        not_found="check the project and repository name (PROJECT/NAME, lowercase) and tag",
    ),
)


# Kind generic: any Docker v2 registry that challenges with Bearer (or Basic, see bearer.py).
GENERIC = TokenKind(RegistryKind.GENERIC, "registry")


# Kind public: anonymous tokens from any token-endpoint registry (Docker Hub by default).
PUBLIC = TokenKind(
    RegistryKind.PUBLIC,
    "public registry",
    Hints(
        rejected="the registry does not serve this repository anonymously: register a "
        "credential for it (another kind)",
        not_allowed="the repository is private or does not exist: register a credential",
    ),
)
