"""Registry logins: credentials a container runtime can run the registry's token flow with.

docker, podman, skopeo and containerd never send a token they are handed: given a username
and secret they ping the registry, read its realm, and ask that realm for a token per
repository themselves. A repository-scoped bearer token is no use to them, so a login is
something the realm itself accepts. Only some kinds have a short-lived one:

    kind       username                                secret                     scoped
    ecr        AWS                                     GetAuthorizationToken's    with a role ARN
    gcr, gar   oauth2accesstoken                       the OAuth2 access token    no
    acr (SP)   00000000-0000-0000-0000-000000000000    an ACR refresh token       no
                                                       (identity_token: docker's
                                                       `identitytoken`)
    Basic pass-through records (allow_basic_passthrough): the stored credential itself,
    marked `passthrough` and audited; ACR with a username/password is one of these.

Every other kind (docker_hub, ghcr, quay, harbor, generic with Bearer, public) issues only
repository-scoped tokens: `no_login` says to pull with the sidecar instead, which uses them.

The per-kind logic lives beside each kind (google.py and azure.py have `login`); ECR's is
the Basic token its minter already makes (`EcrLogins`), so ecr.py is not touched.

A login is a `MintedToken` (a BASIC one: a username and a secret for the registry's own auth)
with three flags, so the broker's TokenCache holds logins beside tokens, with the same
half-life reuse and coalesced misses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pullbroker_service.domain.errors import FailedPrecondition
from pullbroker_service.domain.model import (
    AuthKind,
    AwsCredential,
    Credential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.base import Minter, pull_scope
from pullbroker_service.minting.upstream import record_label

LOGIN_SCOPE = "login"
"""The third part of a login's TokenCache key: ("login" or "login:<repository>")."""
ACR_REFRESH_USERNAME = "00000000-0000-0000-0000-000000000000"
"""The username ACR pairs with a refresh token (`az acr login --expose-token`)."""


@dataclass(frozen=True)
class MintedLogin(MintedToken):
    """A registry login: `username` and `token` (the secret) for the registry's own auth.

    identity_token: the secret is an OAuth2 refresh token (docker's `identitytoken`; a
    credential helper answers it with Username "<token>"). repository_scoped: the registry
    limits it to `repository`; otherwise it allows whatever the stored identity may pull.
    passthrough: it is the long-lived stored credential itself (never write it to disk).
    """

    identity_token: bool = False
    repository_scoped: bool = False
    passthrough: bool = False


@runtime_checkable
class LoginMinter(Protocol):
    """Mints registry logins for one kind (google.py, azure.py, EcrLogins)."""

    async def login(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedLogin:
        """A login that pulls `repository` of `registry` (and maybe more: see the flags)."""
        ...


class EcrLogins:
    """ECR's login is its Basic token: user AWS and GetAuthorizationToken's password; with a
    role ARN the minter's AssumeRole session policy limits it to the repository."""

    def __init__(self, minter: Minter) -> None:
        self._minter = minter

    async def login(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedLogin:
        token = await self._minter.mint(registry, credential, repository)
        scoped = isinstance(credential, AwsCredential) and bool(credential.role_arn)
        return MintedLogin(
            AuthKind.BASIC,
            token.username,
            token.token,
            token.scope if scoped else "",
            token.issued_at,
            token.expires_at,
            repository,
            repository_scoped=scoped,
        )


def login_minter(kind: RegistryKind, minter: Minter) -> LoginMinter | None:
    """The login minter of `kind`, given its pull-token minter; None when it has none."""
    if kind is RegistryKind.ECR:
        return EcrLogins(minter)
    if kind in (RegistryKind.GCR, RegistryKind.GAR, RegistryKind.ACR):
        return minter if isinstance(minter, LoginMinter) else None
    return None


def login_scope(kind: RegistryKind, repository: str) -> str:
    """The cache-key scope of a login: per repository where it may be scoped to one (ECR,
    whose credential decides that), else one per registry and credential version."""
    return f"{LOGIN_SCOPE}:{repository}" if kind is RegistryKind.ECR else LOGIN_SCOPE


def passthrough_login(token: MintedToken) -> MintedLogin:
    """A Basic pass-through token (the stored credential itself) as a login."""
    return MintedLogin(
        AuthKind.BASIC,
        token.username,
        token.token,
        "",
        token.issued_at,
        token.expires_at,
        token.repository,
        passthrough=True,
    )


def no_login(registry: RegistryRecord, image: str, why: str = "") -> FailedPrecondition:
    """The refusal for a registry that has no login to give a runtime, saying what to do."""
    reason = why or "issues only repository-scoped tokens"
    return FailedPrecondition(
        f"registry {record_label(registry)} ({registry.host}) {reason}; runtimes cannot use "
        f"them: pull on the node with `pullbroker-sidecar pull {image}` and `--dest "
        "docker-daemon` (Docker), `--dest containerd[:NAMESPACE]` (containerd), or `--dest "
        "docker-archive:FILE` then `podman load -i FILE` (podman; skopeo reads the archive)"
    )


def scope_of(login: MintedLogin) -> str:
    """What the login allows, for audit: the repository's pull scope, or "" (unscoped)."""
    return pull_scope(login.repository) if login.repository_scoped else ""
