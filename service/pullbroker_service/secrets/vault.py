"""SecretBackend on Vault/OpenBao KV v2: one path per registry id, KV versions as our versions.

hvac is synchronous, so every call runs in a worker thread through a `VaultSession` (which
keeps the token alive). Vendor exceptions become domain errors in one table, `vault_errors`;
messages name the Vault path and what to do, never a response body or a token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from pullbroker_service.domain.errors import (
    BackendUnavailable,
    BrokerError,
    FailedPrecondition,
    PermissionDenied,
    SecretMissing,
)
from pullbroker_service.domain.model import SecretRef
from pullbroker_service.secrets.vault_auth import VaultSession

_T = TypeVar("_T")

# A write with check-and-set loses a race with another writer at most this often in a row.
_CAS_ATTEMPTS = 5


@contextmanager
def vault_errors(operation: str, policy_path: str, capability: str) -> Iterator[None]:
    """Translate hvac/requests exceptions raised inside the block into domain errors.

    `policy_path` and `capability` say what a policy must grant for `operation`; they go into
    the permission message so an operator can fix the policy without reading Vault's logs.
    """
    try:
        yield
    except BrokerError:
        raise
    except hvac.exceptions.InvalidPath as exc:
        raise SecretMissing(f"Vault has no secret at {policy_path} ({operation})") from exc
    except hvac.exceptions.Forbidden as exc:
        raise PermissionDenied(
            f"Vault denied {operation}: the token's policy must grant {capability!r} "
            f"on path {policy_path!r}"
        ) from exc
    except (hvac.exceptions.VaultDown, hvac.exceptions.VaultNotInitialized) as exc:
        raise BackendUnavailable(
            f"Vault is sealed, uninitialised or in maintenance ({operation}): "
            "unseal it, then retry",
            retry_after=5.0,
        ) from exc
    except hvac.exceptions.RateLimitExceeded as exc:
        raise BackendUnavailable(f"Vault rate-limited {operation}: retry", 2.0) from exc
    except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway) as exc:
        raise BackendUnavailable(
            f"Vault failed {operation} with a server error: retry; if it persists check "
            "Vault's own log",
            retry_after=2.0,
        ) from exc
    except requests.exceptions.SSLError as exc:
        raise BackendUnavailable(
            f"TLS verification of Vault failed ({operation}): check that the configured CA "
            "file issued Vault's certificate and that the URL's host is in it",
            retry_after=None,
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise BackendUnavailable(
            f"Vault is unreachable ({operation}): retry shortly; check that Vault is running "
            "and reachable from the broker",
            retry_after=1.0,
        ) from exc
    except hvac.exceptions.InvalidRequest as exc:
        raise FailedPrecondition(
            f"Vault rejected {operation} as invalid: check that {policy_path!r} is on a "
            "KV v2 (or transit) mount configured as the broker expects"
        ) from exc
    except hvac.exceptions.VaultError as exc:
        raise BackendUnavailable(
            f"Vault answered {operation} unexpectedly (HTTP error): retry later", 5.0
        ) from exc


class VaultSecretBackend:
    """KV v2 under `mount`, paths `<prefix>/<registry id>`; SecretRef.key is that path."""

    name = "vault"

    def __init__(
        self,
        session: VaultSession,
        *,
        mount: str = "secret",
        prefix: str = "pullbroker/registries",
        cas: bool = False,
    ) -> None:
        """`cas`: write with check-and-set (needed when the mount sets cas_required)."""
        self._session = session
        self._mount = mount.strip("/")
        self._prefix = prefix.strip("/")
        self._cas = cas

    def __repr__(self) -> str:
        return f"VaultSecretBackend(mount={self._mount!r}, prefix={self._prefix!r})"

    def path_for(self, key: str) -> str:
        if not key or "/" in key or key in (".", ".."):
            raise ValueError("a registry id is one non-empty path segment")
        return f"{self._prefix}/{key}"

    async def put(self, key: str, value: bytes) -> SecretRef:
        path = self.path_for(key)
        secret = {"value": base64.b64encode(value).decode("ascii")}
        policy = f"{self._mount}/data/{path}"
        with vault_errors(f"writing {path}", policy, "create/update"):
            try:
                version = await self._run(lambda c: self._write(c, path, secret))
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" not in str(exc):
                    raise
                raise FailedPrecondition(
                    f"KV mount {self._mount!r} requires check-and-set: configure the Vault "
                    "backend with cas enabled"
                ) from exc
        return SecretRef(backend=self.name, key=path, version=str(version))

    def _write(self, client: hvac.Client, path: str, secret: dict[str, str]) -> int:
        kv = client.secrets.kv.v2
        if not self._cas:
            resp = kv.create_or_update_secret(path=path, secret=secret, mount_point=self._mount)
            return int(resp["data"]["version"])
        for _ in range(_CAS_ATTEMPTS):
            current = self._current_version(client, path)
            try:
                resp = kv.create_or_update_secret(
                    path=path, secret=secret, cas=current, mount_point=self._mount
                )
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" not in str(exc):
                    raise
                continue  # another writer got in between: read the new version and retry
            return int(resp["data"]["version"])
        raise BackendUnavailable(f"concurrent writers kept changing {path}: retry", 0.5)

    def _current_version(self, client: hvac.Client, path: str) -> int:
        try:
            meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=self._mount)
        except hvac.exceptions.InvalidPath:
            return 0
        return int(meta["data"]["current_version"])

    async def get(self, ref: SecretRef) -> bytes:
        path, version = self._check_ref(ref)
        policy = f"{self._mount}/data/{path}"
        with vault_errors(f"reading {path} version {version}", policy, "read"):
            resp = await self._run(
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=path,
                    version=version,
                    mount_point=self._mount,
                    raise_on_deleted_version=True,
                )
            )
        try:
            return base64.b64decode(resp["data"]["data"]["value"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise SecretMissing(
                f"Vault path {path} version {version} does not hold a pullbroker secret"
            ) from None

    def _check_ref(self, ref: SecretRef) -> tuple[str, int]:
        if ref.backend != self.name or not ref.key.startswith(self._prefix + "/"):
            raise SecretMissing(f"reference to {ref.backend}:{ref.key} is not in this Vault store")
        try:
            return ref.key, int(ref.version)
        except ValueError:
            raise SecretMissing(f"Vault reference {ref.key} has a malformed version") from None

    async def delete(self, key: str) -> None:
        path = self.path_for(key)
        policy = f"{self._mount}/metadata/{path}"
        with vault_errors(f"deleting {path}", policy, "delete"):
            await self._run(
                lambda c: c.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=path, mount_point=self._mount
                )
            )

    async def delete_version(self, ref: SecretRef) -> None:
        path, version = self._check_ref(ref)
        policy = f"{self._mount}/destroy/{path}"
        with vault_errors(f"destroying {path} version {version}", policy, "update"):
            try:
                await self._run(
                    lambda c: c.secrets.kv.v2.destroy_secret_versions(
                        path=path, versions=[version], mount_point=self._mount
                    )
                )
            except hvac.exceptions.InvalidPath:
                return  # nothing there: already gone

    async def list_keys(self) -> list[str]:
        policy = f"{self._mount}/metadata/{self._prefix}/"
        with vault_errors(f"listing {self._prefix}/", policy, "list"):
            try:
                resp = await self._run(
                    lambda c: c.secrets.kv.v2.list_secrets(
                        path=self._prefix, mount_point=self._mount
                    )
                )
            except hvac.exceptions.InvalidPath:
                return []  # Vault answers 404 for an empty folder
        keys: list[str] = resp["data"]["keys"]
        return sorted(k for k in keys if not k.endswith("/"))

    async def check(self) -> None:
        with vault_errors("checking health", "auth/token/lookup-self", "read"):
            await self._run(_check_health)

    async def close(self) -> None:
        """Close the session's HTTP connections (a session shared with a transit wrapper
        keeps working: requests reopens connections on the next call)."""
        await asyncio.to_thread(self._session.close)

    async def _run(self, fn: Callable[[hvac.Client], _T]) -> _T:
        return await asyncio.to_thread(self._session.call, fn)


def _check_health(client: hvac.Client) -> None:
    """Unsealed and active (or a standby that forwards), and our token is accepted."""
    health: Any = client.sys.read_health_status(method="GET", standby_ok=True)
    if isinstance(health, requests.Response):  # non-200: hvac hands back the raw response
        raise hvac.exceptions.VaultDown()
    client.auth.token.lookup_self()
