"""Registry records, credentials and tokens: plain values, no I/O."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import datetime

from pullbroker_client.secret import Secret


class RegistryKind(enum.StrEnum):
    GENERIC = "generic"
    DOCKER_HUB = "docker_hub"
    GHCR = "ghcr"
    QUAY = "quay"
    HARBOR = "harbor"
    ECR = "ecr"
    GCR = "gcr"
    GAR = "gar"
    ACR = "acr"
    PUBLIC = "public"


class RecordState(enum.StrEnum):
    """PENDING: secret may be written, record not yet usable (the reconciler finishes or
    rolls it back). READY: usable."""

    PENDING = "pending"
    READY = "ready"


class AuthKind(enum.StrEnum):
    BEARER = "bearer"
    BASIC = "basic"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class SecretRef:
    """Where a credential version lives. Never holds the secret itself.

    backend: "local" | "vault" | "aws"; key: the backend's name for the secret (a local key
    id, a Vault path, a Secrets Manager ARN); version: the backend's version id.
    """

    backend: str
    key: str
    version: str

    def to_json(self) -> str:
        return json.dumps({"backend": self.backend, "key": self.key, "version": self.version})

    @classmethod
    def from_json(cls, text: str) -> SecretRef:
        d = json.loads(text)
        return cls(backend=d["backend"], key=d["key"], version=d["version"])


@dataclass(frozen=True)
class BasicCredential:
    username: str
    password: Secret


@dataclass(frozen=True)
class AwsCredential:
    access_key_id: str
    secret_access_key: Secret
    role_arn: str = ""


@dataclass(frozen=True)
class GoogleServiceAccount:
    key_json: Secret


@dataclass(frozen=True)
class AzureServicePrincipal:
    tenant_id: str
    client_id: str
    client_secret: Secret


Credential = BasicCredential | AwsCredential | GoogleServiceAccount | AzureServicePrincipal


def credential_to_bytes(credential: Credential) -> bytes:
    """Serialise for a secret backend: the only place a credential becomes plaintext bytes."""
    body: dict[str, str]
    match credential:
        case BasicCredential(username=u, password=p):
            body = {"kind": "basic", "username": u, "password": p.reveal()}
        case AwsCredential(access_key_id=a, secret_access_key=s, role_arn=r):
            body = {
                "kind": "aws",
                "access_key_id": a,
                "secret_access_key": s.reveal(),
                "role_arn": r,
            }
        case GoogleServiceAccount(key_json=k):
            body = {"kind": "google", "key_json": k.reveal()}
        case AzureServicePrincipal(tenant_id=t, client_id=c, client_secret=s):
            body = {"kind": "azure", "tenant_id": t, "client_id": c, "client_secret": s.reveal()}
    return json.dumps(body, separators=(",", ":")).encode()


def credential_from_bytes(data: bytes) -> Credential:
    d = json.loads(data)
    match d.get("kind"):
        case "basic":
            return BasicCredential(d["username"], Secret(d["password"]))
        case "aws":
            return AwsCredential(d["access_key_id"], Secret(d["secret_access_key"]), d["role_arn"])
        case "google":
            return GoogleServiceAccount(Secret(d["key_json"]))
        case "azure":
            return AzureServicePrincipal(d["tenant_id"], d["client_id"], Secret(d["client_secret"]))
    raise ValueError("stored credential has an unknown kind")


def credential_username(credential: Credential | None) -> str:
    """The non-secret name shown on the record."""
    match credential:
        case BasicCredential(username=u):
            return u
        case AwsCredential(access_key_id=a):
            return a
        case AzureServicePrincipal(client_id=c):
            return c
        case GoogleServiceAccount():
            return "_json_key"
    return ""


@dataclass(frozen=True)
class RegistryRecord:
    """A registry as the metadata store holds it: a reference to the secret, never the secret."""

    id: str
    display_name: str
    kind: RegistryKind
    url: str
    host: str
    username: str
    registry_ca_pem: str
    region: str
    allow_basic_passthrough: bool
    credential_version: int
    secret_ref: SecretRef | None
    creator: str
    create_time: datetime
    update_time: datetime
    etag: str
    state: RecordState = RecordState.READY
    previous_secret_ref: SecretRef | None = None
    """The version the last rotation replaced, kept for a rollback until the next rotation."""
    repositories: tuple[str, ...] = ()
    """Repository globs of the host this record serves (domain/repository_globs.py); empty:
    every repository."""

    @property
    def resource_name(self) -> str:
        return f"registries/{self.id}"


@dataclass(frozen=True)
class MintedToken:
    """A short-lived pull token. `token` is a Secret; expires_at is timezone-aware UTC."""

    auth_kind: AuthKind
    username: str
    token: Secret
    scope: str
    issued_at: datetime
    expires_at: datetime
    repository: str = ""
    extra: dict[str, str] = field(default_factory=dict)
