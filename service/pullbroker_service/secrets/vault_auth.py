"""Logging in to Vault and keeping the client's token alive.

A `VaultSession` owns one hvac client. Before each call it makes sure the token still has
life: once `renew_at` of its lease has passed it renews the token (renew-self), and it logs
in again when the token is not renewable, renewal fails, or renewal no longer buys a useful
lease (the token reached its max TTL). A 403 on a token that turns out to be dead (revoked,
or expired between calls) leads to one fresh login and one retry; a 403 on a live token is a
policy denial and is passed on. Credentials come from files or environment variables, never
from the command line, and are re-read at every login so rotated files are picked up.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests
import structlog
from pullbroker_client.secret import Secret

from pullbroker_service.domain.errors import BackendUnavailable, PermissionDenied

_T = TypeVar("_T")
_log = structlog.get_logger(__name__)

DEFAULT_K8S_TOKEN_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class CredentialSource(Protocol):
    """Where a login credential is read from (at every login, so rotation is picked up)."""

    def read(self) -> Secret: ...


@dataclass(frozen=True)
class FileSource:
    """A credential in a file (a Vault agent sink, a mounted Kubernetes secret, ...)."""

    path: Path

    def read(self) -> Secret:
        try:
            text = self.path.read_text().strip()
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot read the Vault credential file {self.path}: {exc.strerror}",
                retry_after=None,
            ) from None
        if not text:
            raise BackendUnavailable(
                f"the Vault credential file {self.path} is empty", retry_after=None
            )
        return Secret(text)


@dataclass(frozen=True)
class EnvSource:
    """A credential in an environment variable of the broker process."""

    name: str

    def read(self) -> Secret:
        value = os.environ.get(self.name, "").strip()
        if not value:
            raise BackendUnavailable(
                f"environment variable {self.name} holding a Vault credential is unset or empty",
                retry_after=None,
            )
        return Secret(value)


@dataclass(frozen=True)
class Lease:
    """What Vault said about the token it issued; `duration` 0 means it never expires."""

    accessor: str
    duration: float
    renewable: bool


class VaultAuth(Protocol):
    """One way of obtaining a client token; `login` sets it on the client."""

    @property
    def method(self) -> str:
        """The auth method's name, for messages and logs."""
        ...

    def login(self, client: hvac.Client) -> Lease: ...


def _lease_from_auth(block: dict[str, Any]) -> Lease:
    return Lease(
        accessor=str(block.get("accessor", "")),
        duration=float(block.get("lease_duration", 0)),
        renewable=bool(block.get("renewable", False)),
    )


@dataclass(frozen=True)
class TokenAuth:
    """A token issued out of band (by an operator or a Vault agent)."""

    source: CredentialSource
    method: str = "token"

    def login(self, client: hvac.Client) -> Lease:
        client.token = self.source.read().reveal()
        try:
            data = client.auth.token.lookup_self()["data"]
        except hvac.exceptions.Forbidden:
            raise PermissionDenied(
                "Vault rejected the configured token (expired, revoked or wrong): "
                "issue a new one and update the token file or variable"
            ) from None
        return Lease(
            accessor=str(data.get("accessor", "")),
            duration=float(data.get("ttl", 0)),
            renewable=bool(data.get("renewable", False)),
        )


@dataclass(frozen=True)
class AppRoleAuth:
    """AppRole login with a role id and a secret id."""

    role_id: CredentialSource
    secret_id: CredentialSource
    mount: str = "approle"
    method: str = "approle"

    def login(self, client: hvac.Client) -> Lease:
        role_id, secret_id = self.role_id.read(), self.secret_id.read()
        try:
            response = client.auth.approle.login(
                role_id=role_id.reveal(), secret_id=secret_id.reveal(), mount_point=self.mount
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
            raise PermissionDenied(
                f"Vault refused the AppRole login at auth/{self.mount}/login: check the role id "
                "and that the secret id is current (secret ids expire and have use limits)"
            ) from None
        return _lease_from_auth(response["auth"])


@dataclass(frozen=True)
class KubernetesAuth:
    """Kubernetes login with the pod's service-account token (re-read: projected tokens rotate)."""

    role: str
    jwt: CredentialSource = FileSource(DEFAULT_K8S_TOKEN_FILE)
    mount: str = "kubernetes"
    method: str = "kubernetes"

    def login(self, client: hvac.Client) -> Lease:
        jwt = self.jwt.read()
        try:
            response = client.auth.kubernetes.login(
                role=self.role, jwt=jwt.reveal(), mount_point=self.mount
            )
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
            raise PermissionDenied(
                f"Vault refused the Kubernetes login for role {self.role!r} at "
                f"auth/{self.mount}/login: check that the role binds this service account "
                "and namespace, and that Vault can reach the TokenReview API"
            ) from None
        return _lease_from_auth(response["auth"])


@dataclass(frozen=True)
class VaultConnection:
    """Where Vault is and how to trust it."""

    url: str
    """Base URL, e.g. https://vault.internal:8200."""
    ca_file: Path | None = None
    """PEM CA bundle trusted for Vault's certificate; None = certifi's bundle, never the
    environment's (REQUESTS_CA_BUNDLE and friends are ignored)."""
    namespace: str | None = None
    """Vault/OpenBao namespace, if any."""
    timeout: float = 10.0
    """Seconds for each HTTP request."""
    client_cert: tuple[Path, Path] | None = None
    """(certificate, key) PEM files when Vault's listener requires client certificates."""


def _make_client(connection: VaultConnection) -> hvac.Client:
    verify: str | bool = str(connection.ca_file) if connection.ca_file else True
    session = requests.Session()
    # requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE replace verify and proxies come from
    # the environment when trust_env is on; trust must be exactly what was configured.
    session.trust_env = False
    session.verify = verify
    cert: tuple[str, str] | bool = False  # False, not None: None lets hvac use VAULT_CLIENT_CERT
    if connection.client_cert is not None:
        cert = (str(connection.client_cert[0]), str(connection.client_cert[1]))
    # token "" (not None) stops hvac from reading VAULT_TOKEN or ~/.vault-token.
    return hvac.Client(
        url=connection.url,
        token="",
        cert=cert,
        verify=verify,
        timeout=connection.timeout,
        session=session,
        namespace=connection.namespace,
    )


class VaultSession:
    """An hvac client whose token is kept valid. `call` blocks: run it in a worker thread."""

    def __init__(
        self, connection: VaultConnection, auth: VaultAuth, *, renew_at: float = 2 / 3
    ) -> None:
        self.connection = connection
        self.auth = auth
        self._renew_at = renew_at
        self._client = _make_client(connection)
        self._lock = threading.Lock()
        self._lease: Lease | None = None
        self._obtained = 0.0
        self._useful = 0.0
        self._generation = 0
        self.logins = 0
        self.renewals = 0

    def __repr__(self) -> str:
        return f"VaultSession(url={self.connection.url!r}, auth={self.auth.method!r})"

    @property
    def accessor(self) -> str:
        """The current token's accessor ("" before the first login); not a credential."""
        return self._lease.accessor if self._lease else ""

    def call(self, fn: Callable[[hvac.Client], _T]) -> _T:
        """Run `fn` with a fresh token; on a 403 from a dead token, log in again and retry once."""
        generation = self._ensure_fresh()
        try:
            return fn(self._client)
        except hvac.exceptions.Forbidden:
            if not self._recover(generation):
                raise
        return fn(self._client)

    def close(self) -> None:
        self._client.adapter.close()

    def _ensure_fresh(self) -> int:
        with self._lock:
            if self._lease is None:
                self._login()
            elif self._lease.duration and self._elapsed() >= self._lease.duration * self._renew_at:
                self._refresh()
            return self._generation

    def _elapsed(self) -> float:
        return time.monotonic() - self._obtained

    def _refresh(self) -> None:
        assert self._lease is not None
        if self._lease.renewable:
            try:
                block = self._client.auth.token.renew_self()["auth"]
            except hvac.exceptions.VaultError:
                # Expired (403), past its max TTL (500 in OpenBao), ...: a login fixes all.
                block = None
            if block is not None and float(block.get("lease_duration", 0)) >= self._useful:
                self._set_lease(_lease_from_auth(block), renewed=True)
                return
        self._login()

    def _login(self) -> None:
        lease = self.auth.login(self._client)
        self.logins += 1
        # A renewal that buys less than this is the max TTL closing in: log in instead.
        self._useful = lease.duration * (1 - self._renew_at)
        self._set_lease(lease, renewed=False)

    def _set_lease(self, lease: Lease, *, renewed: bool) -> None:
        self._lease = lease
        self._obtained = time.monotonic()
        self._generation += 1
        if renewed:
            self.renewals += 1
        event = "vault_token_renewed" if renewed else "vault_logged_in"
        _log.info(event, auth_method=self.auth.method, ttl_seconds=lease.duration)

    def _recover(self, generation: int) -> bool:
        """After a 403: True when a different token is now in place (so retrying makes sense)."""
        with self._lock:
            if generation != self._generation:
                return True  # another thread already replaced the token
            try:
                self._client.auth.token.lookup_self()
                return False  # the token is alive: the 403 is the policy speaking
            except hvac.exceptions.Forbidden:
                pass
            # The token is dead. A token source that still holds it makes login() raise a
            # PermissionDenied telling the operator to issue a new one.
            self._login()
            return True
