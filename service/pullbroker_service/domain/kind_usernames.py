"""Username conventions of the token-endpoint kinds, checked before a credential is stored:

    docker_hub  Docker ID (4-30 lowercase letters and digits), never the e-mail address
    ghcr        GitHub user name (a PAT with read:packages is the password)
    quay        user name, robot NAMESPACE+ROBOT, or $oauthtoken / $app for token logins
    harbor      user name, or robot$NAME / robot$PROJECT+NAME for robot accounts

Each check raises InvalidRegistry or returns; kinds.py names one per kind (KindRule.username).
"""

from __future__ import annotations

import re

from pullbroker_service.domain.errors import InvalidRegistry

DOCKER_ID = re.compile(r"^[a-z0-9]{4,30}$")
_GITHUB_USER = re.compile(r"^[A-Za-z0-9](?:-?[A-Za-z0-9])*(?:\[bot\])?$")
_GITHUB_USER_MAX = 39
_QUAY_NAME = re.compile(r"^(?=.{2,255}$)[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_QUAY_ROBOT = re.compile(r"^[a-z][a-z0-9_]{1,254}$")
# Quay's token logins: an OAuth application token, an app-specific token.
_QUAY_TOKEN_USERS = frozenset({"$oauthtoken", "$app"})
HARBOR_ROBOT_PREFIX = "robot$"

# Messages describe the problem but never repeat the username: a pasted token lands in the
# username field often enough that echoing it would leak it into errors and logs.


def docker_hub_username(name: str) -> None:
    if "@" in name:
        raise InvalidRegistry(
            "docker_hub username must be your Docker ID, not an e-mail address: access "
            "tokens are tied to the Docker ID (shown at hub.docker.com under your avatar)"
        )
    if not DOCKER_ID.match(name):
        raise InvalidRegistry(
            "docker_hub username is not a Docker ID (4-30 lowercase letters and digits); an "
            "organization access token uses the organization's name"
        )


def github_username(name: str) -> None:
    if "@" in name:
        raise InvalidRegistry("ghcr username is the GitHub user name, not an e-mail address")
    if len(name.removesuffix("[bot]")) > _GITHUB_USER_MAX or not _GITHUB_USER.match(name):
        raise InvalidRegistry(
            "ghcr username must be a GitHub user name: up to 39 letters, digits and single "
            "hyphens, not starting or ending with a hyphen"
        )


def quay_username(name: str) -> None:
    if name in _QUAY_TOKEN_USERS:
        return
    namespace, plus, robot = name.partition("+")
    if plus:
        if not (_QUAY_NAME.match(namespace) and _QUAY_ROBOT.match(robot)):
            raise InvalidRegistry(
                "quay robot accounts are named NAMESPACE+ROBOT (e.g. acme+puller): a "
                "lowercase organization or user name, '+', and a robot name that starts "
                "with a letter and holds lowercase letters, digits and '_'"
            )
        return
    if not _QUAY_NAME.match(name):
        raise InvalidRegistry(
            "quay username must be 2-255 lowercase letters and digits, optionally separated "
            "by '.', '_' or '-'; a robot account is NAMESPACE+ROBOT, an OAuth token logs in "
            "as $oauthtoken"
        )


def harbor_username(name: str) -> None:
    if name.startswith(HARBOR_ROBOT_PREFIX):
        project, plus, robot = name.removeprefix(HARBOR_ROBOT_PREFIX).rpartition("+")
        if not robot or (plus and not project):
            raise InvalidRegistry(
                "harbor robot accounts are named robot$NAME (system robot) or "
                "robot$PROJECT+NAME (project robot): the part after robot$ is incomplete"
            )
        return
    if name == "robot" or name.startswith("robot+"):
        raise InvalidRegistry(
            "harbor username looks like a robot account whose '$' was lost: robot accounts "
            "are robot$NAME or robot$PROJECT+NAME; quote the name in your shell ('robot$x')"
        )
