"""What the broker client sends and returns besides the generated RPCs: typed results.

`IssuedPullToken` and `IssuedRegistryLogin` hold their token or secret as a `Secret`.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from google.protobuf import field_mask_pb2
from pullbroker.v1 import pull_pb2, registry_pb2

from pullbroker_client.secret import Secret

_AUTH_KINDS = {1: "bearer", 2: "basic", 3: "anonymous"}


@dataclass(frozen=True)
class IssuedPullToken:
    """A pull token from the broker; `token` never renders itself."""

    registry: str
    registry_host: str
    registry_url: str
    auth_kind: str
    username: str
    token: Secret = field(repr=False)
    scope: str
    expires_at: dt.datetime
    repository: str
    registry_ca_pem: str
    passthrough: bool = False
    """The token is the registry's long-lived credential: keep it in memory only."""

    def authorization(self) -> Secret | None:
        """The Authorization header value for the registry, or None for anonymous."""
        if self.auth_kind == "bearer":
            return Secret("Bearer " + self.token.reveal())
        if self.auth_kind == "basic":
            raw = f"{self.username}:{self.token.reveal()}".encode()
            return Secret("Basic " + base64.b64encode(raw).decode())
        return None


@dataclass(frozen=True)
class IssuedRegistryLogin:
    """A registry login for container runtimes from the broker; `secret` never renders itself.

    identity_token: `secret` is an OAuth2 refresh token (docker's `identitytoken`).
    repository_scoped: the registry limits the login to the image's repository.
    passthrough: `secret` is the registry's long-lived credential: never write it to disk.
    """

    registry: str
    registry_host: str
    registry_url: str
    username: str
    secret: Secret = field(repr=False)
    identity_token: bool
    expires_at: dt.datetime
    repository_scoped: bool
    passthrough: bool
    registry_ca_pem: str


def basic_credential(username: str, password: Secret) -> registry_pb2.Credential:
    """A Credential message (username + password, token, PAT or robot secret)."""
    return registry_pb2.Credential(
        basic=registry_pb2.BasicCredential(username=username, password=password.reveal())
    )


def field_mask(paths: Sequence[str] | field_mask_pb2.FieldMask) -> field_mask_pb2.FieldMask:
    """A FieldMask from its paths (or the mask itself)."""
    if isinstance(paths, field_mask_pb2.FieldMask):
        return paths
    return field_mask_pb2.FieldMask(paths=list(paths))


def issued_token(message: pull_pb2.PullToken) -> IssuedPullToken:
    expire = message.expire_time.ToDatetime(tzinfo=dt.UTC)
    return IssuedPullToken(
        registry=message.registry,
        registry_host=message.registry_host,
        registry_url=message.registry_url,
        auth_kind=_AUTH_KINDS.get(message.auth_kind, "unspecified"),
        username=message.username,
        token=Secret(message.token),
        scope=message.scope,
        expires_at=expire,
        repository=message.repository,
        registry_ca_pem=message.registry_ca_pem,
        passthrough=message.passthrough,
    )


def issued_login(message: pull_pb2.RegistryLogin) -> IssuedRegistryLogin:
    return IssuedRegistryLogin(
        registry=message.registry,
        registry_host=message.registry_host,
        registry_url=message.registry_url,
        username=message.username,
        secret=Secret(message.secret),
        identity_token=message.identity_token,
        expires_at=message.expire_time.ToDatetime(tzinfo=dt.UTC),
        repository_scoped=message.repository_scoped,
        passthrough=message.passthrough,
        registry_ca_pem=message.registry_ca_pem,
    )
