"""The secret backend the configuration names, built and guarded as the broker uses it.

`build_secret_backend` makes one adapter from `SecretsConfig` (one function per family:
local with its key wrapper, vault, aws). Every backend it returns:

- lists the live versions of a key (`list_versions`), which the reconciler needs to find a
  rotation's stray version; the vault and aws adapters get it here, by subclassing, until the
  port and the adapters grow it themselves;
- is wrapped in `GuardedBackend`, which turns a PermissionDenied from the backend into
  BackendPermissionDenied (Vault's or AWS's refusal concerns the broker's own identity, never
  the caller's) and tells a listener at once when the backend became unavailable, and,
  with metrics on, times every call by operation and counts those the backend was
  unavailable for.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import hvac.exceptions
from botocore.exceptions import ClientError
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret

from pullbroker_service.config.broker import (
    AwsConfig,
    SecretsConfig,
    VaultConfig,
    require_backend_settings,
)
from pullbroker_service.domain.errors import (
    BackendPermissionDenied,
    BackendUnavailable,
    PermissionDenied,
)
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.infra.metrics import BackendMetrics
from pullbroker_service.secrets.aws import (
    AwsConnection,
    AwsSecretsManagerBackend,
    aws_errors,
    error_code,
)
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.secrets.envelopes import EnvelopeTable
from pullbroker_service.secrets.kek import FileKeyWrapper, KeyWrapper
from pullbroker_service.secrets.kek_kms import KmsKeyWrapper
from pullbroker_service.secrets.kek_vault import VaultTransitKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.secrets.vault import VaultSecretBackend, vault_errors
from pullbroker_service.secrets.vault_auth import (
    AppRoleAuth,
    CredentialSource,
    EnvSource,
    FileSource,
    KubernetesAuth,
    TokenAuth,
    VaultAuth,
    VaultConnection,
    VaultSession,
)

_T = TypeVar("_T")

StoredVersion = tuple[SecretRef, datetime]  # a live version and when it was written


class VersionedBackend(SecretBackend, Protocol):
    """A SecretBackend that can also list the live versions of one key."""

    async def list_versions(self, key: str) -> list[StoredVersion]:
        """Every version of `key` that `get` can still read, oldest first; [] if none."""
        ...


def build_secret_backend(
    settings: SecretsConfig,
    home: Home,
    name: str = "",
    *,
    envelopes: EnvelopeTable | None = None,
) -> GuardedBackend:
    """The backend `name` (default: the configured one), ready to use (connects lazily);
    ConfigError if `settings` lacks what it needs. `envelopes` is where the local backend
    keeps its ciphertexts (the broker's PostgreSQL database); None means its SQLite file."""
    chosen = name or settings.backend
    require_backend_settings(settings, chosen)
    if chosen == "vault":
        assert settings.vault is not None  # require_backend_settings checked it
        return GuardedBackend(vault_backend(settings.vault))
    if chosen == "aws":
        assert settings.aws is not None  # require_backend_settings checked it
        return GuardedBackend(aws_backend(settings.aws))
    return GuardedBackend(local_backend(settings, home, envelopes))


def local_backend(
    settings: SecretsConfig, home: Home, envelopes: EnvelopeTable | None = None
) -> LocalSecretBackend:
    """The embedded store (envelopes in <home>/secrets, or `envelopes`), its data keys
    wrapped as configured."""
    wrapper: KeyWrapper
    match settings.local.key_wrapper:
        case "kms":
            assert settings.aws is not None  # require_backend_settings checked it
            wrapper = KmsKeyWrapper(aws_connection(settings.aws), settings.aws.kms_key_id)
        case "vault-transit":
            vault = settings.vault
            assert vault is not None  # load_config checked it
            wrapper = VaultTransitKeyWrapper(
                vault_session(vault), key_name=vault.transit_key, mount=vault.transit_mount
            )
        case _:
            wrapper = FileKeyWrapper.open(settings.local.kek_file or home.kek_key)
    return LocalSecretBackend(envelopes if envelopes is not None else home.secrets_db, wrapper)


def vault_session(vault: VaultConfig) -> VaultSession:
    """A logged-in-on-first-use Vault client; credentials are read from files or variables."""
    cert = None
    if vault.client_cert_file is not None and vault.client_key_file is not None:
        cert = (vault.client_cert_file, vault.client_key_file)
    connection = VaultConnection(
        url=vault.url,
        ca_file=vault.ca_file,
        namespace=vault.namespace,
        timeout=vault.timeout_seconds,
        client_cert=cert,
    )
    return VaultSession(connection, _vault_auth(vault))


def _vault_auth(vault: VaultConfig) -> VaultAuth:
    auth = vault.auth

    def source(name: str) -> CredentialSource:
        path: Path | None = getattr(auth, f"{name}_file")
        return FileSource(path) if path is not None else EnvSource(getattr(auth, f"{name}_env"))

    if auth.method == "approle":
        return AppRoleAuth(source("role_id"), source("secret_id"), mount=auth.mount or "approle")
    if auth.method == "kubernetes":
        mount = auth.mount or "kubernetes"
        return KubernetesAuth(auth.role, FileSource(auth.jwt_file), mount=mount)
    return TokenAuth(source("token"))


def vault_backend(vault: VaultConfig) -> BrokerVaultBackend:
    return BrokerVaultBackend(
        vault_session(vault), mount=vault.mount, prefix=vault.prefix, cas=vault.cas
    )


def aws_connection(aws: AwsConfig) -> AwsConnection:
    """How to reach AWS; static keys only from the configured files, else the standard chain."""
    key_id = secret = token = None
    if aws.access_key_id_file is not None and aws.secret_access_key_file is not None:
        key_id = _read_aws_file(aws.access_key_id_file).reveal()
        secret = _read_aws_file(aws.secret_access_key_file)
        if aws.session_token_file is not None:
            token = _read_aws_file(aws.session_token_file)
    return AwsConnection(
        region=aws.region,
        endpoint_url=aws.endpoint_url,
        ca_file=aws.ca_file,
        access_key_id=key_id,
        secret_access_key=secret,
        session_token=token,
        connect_timeout=aws.connect_timeout_seconds,
        read_timeout=aws.read_timeout_seconds,
        max_attempts=aws.max_attempts,
    )


def _read_aws_file(path: Path) -> Secret:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BackendUnavailable(
            f"cannot read the AWS credential file {path}: {exc.strerror}", retry_after=None
        ) from None
    if not text:
        raise BackendUnavailable(f"the AWS credential file {path} is empty", retry_after=None)
    return Secret(text)


def aws_backend(aws: AwsConfig) -> BrokerAwsBackend:
    return BrokerAwsBackend(
        aws_connection(aws),
        kms_key_id=aws.kms_key_id,
        prefix=aws.prefix,
        recovery_window_days=aws.recovery_window_days or None,
    )


class BrokerVaultBackend(VaultSecretBackend):
    """The Vault adapter with `list_versions` (KV v2 metadata: versions not deleted or
    destroyed)."""

    async def list_versions(self, key: str) -> list[StoredVersion]:
        path = self.path_for(key)
        mount = self._mount
        with vault_errors(f"listing versions of {path}", f"{mount}/metadata/{path}", "read"):
            try:
                meta = await self._run(
                    lambda c: c.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)
                )
            except hvac.exceptions.InvalidPath:
                return []
        live = [
            (SecretRef(self.name, path, str(number)), datetime.fromisoformat(info["created_time"]))
            for number, info in meta["data"]["versions"].items()
            if not info.get("destroyed") and not info.get("deletion_time")
        ]
        return sorted(live, key=lambda v: int(v[0].version))


class BrokerAwsBackend(AwsSecretsManagerBackend):
    """The Secrets Manager adapter with `list_versions` (versions that still carry a staging
    label: the adapter treats a label-less version as deleted)."""

    async def list_versions(self, key: str) -> list[StoredVersion]:
        name = self.name_for(key)
        with aws_errors(f"listing versions of {name}", "secretsmanager:ListSecretVersionIds"):
            return await self._run(lambda c: _aws_versions(c, name))


def _aws_versions(client: Any, name: str) -> list[StoredVersion]:
    try:
        # The ARN from DescribeSecret: the references put() made hold it, and some
        # implementations answer ListSecretVersionIds with the name in its ARN field.
        described = client.describe_secret(SecretId=name)
        if described.get("DeletedDate"):
            return []  # scheduled for deletion: nothing get() can read
        arn = described["ARN"]
        found: list[StoredVersion] = []
        kwargs: dict[str, Any] = {"SecretId": arn, "IncludeDeprecated": False}
        while True:
            page = client.list_secret_version_ids(**kwargs)
            found += [
                (SecretRef("aws", arn, v["VersionId"]), v["CreatedDate"])
                for v in page.get("Versions", [])
                if v.get("VersionStages")
            ]
            if not page.get("NextToken"):
                return sorted(found, key=lambda v: v[1])
            kwargs["NextToken"] = page["NextToken"]
    except ClientError as exc:
        if error_code(exc) in ("ResourceNotFoundException", "InvalidRequestException"):
            return []
        raise


class GuardedBackend:
    """A VersionedBackend as the broker uses it (see the module docstring).

    `on_unavailable`, when set, is called after any call failed with BackendUnavailable, so
    the health check runs now instead of at its next tick; `metrics`, when set, records
    each call's latency and the unavailable ones.
    """

    def __init__(self, inner: VersionedBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.on_unavailable: Callable[[], None] | None = None
        self.metrics: BackendMetrics | None = None

    def __repr__(self) -> str:
        return f"GuardedBackend({self.inner!r})"

    async def put(self, key: str, value: bytes) -> SecretRef:
        return await self._guard("put", self.inner.put(key, value))

    async def get(self, ref: SecretRef) -> bytes:
        return await self._guard("get", self.inner.get(ref))

    async def delete(self, key: str) -> None:
        await self._guard("delete", self.inner.delete(key))

    async def delete_version(self, ref: SecretRef) -> None:
        await self._guard("delete_version", self.inner.delete_version(ref))

    async def list_keys(self) -> list[str]:
        return await self._guard("list_keys", self.inner.list_keys())

    async def list_versions(self, key: str) -> list[StoredVersion]:
        return await self._guard("list_versions", self.inner.list_versions(key))

    async def check(self) -> None:
        await self._guard("check", self.inner.check())

    async def close(self) -> None:
        await self.inner.close()

    async def _guard(self, operation: str, call: Awaitable[_T]) -> _T:
        started = time.monotonic()
        unavailable = False
        try:
            return await call
        except BackendPermissionDenied:
            raise
        except PermissionDenied as exc:
            raise BackendPermissionDenied(str(exc)) from exc
        except BackendUnavailable:
            unavailable = True
            if self.on_unavailable is not None:
                self.on_unavailable()
            raise
        finally:
            if self.metrics is not None:
                self.metrics.observe(operation, started, unavailable)
