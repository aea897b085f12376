"""Kind docker_hub: registry-1.docker.io, tokens from auth.docker.io.

Image references name `docker.io`; one-component names live under `library/` (official
images). The credential is a Docker ID and a personal (or organization) access token; with
two-factor authentication the account password does not work. Docker Hub counts pulls per
account in a window and announces it in `ratelimit-*` headers (see ratelimit.py). It answers
a repository the credential cannot see - private, or not there at all - the same way.
"""

from __future__ import annotations

from pullbroker_service.domain.model import RegistryKind
from pullbroker_service.minting.token_kind import TokenKind
from pullbroker_service.minting.upstream import Hints

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
