"""Typed clients for the broker: BrokerClient (blocking) and AsyncBrokerClient (grpc.aio).

Methods are the RPCs in snake_case and return the proto messages, except
`issue_pull_token` and `issue_registry_login`, which return an `IssuedPullToken` and an
`IssuedRegistryLogin` whose token or secret is a `Secret`. Every
RpcError becomes a `BrokerCallError` with the status code and the broker's message.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from pullbroker.v1 import (
    deployment_pb2,
    deployment_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    pull_pb2,
    pull_pb2_grpc,
    registry_pb2,
    registry_pb2_grpc,
)

from pullbroker_client.errors import ClientError
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_client.tls import TlsFiles, channel_credentials

REQUEST_ID_KEY = "x-request-id"
DEFAULT_TIMEOUT = 30.0
_AUTH_KINDS = {1: "bearer", 2: "basic", 3: "anonymous"}
_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


class BrokerCallError(ClientError):
    """A broker RPC failed. `.code` is the grpc.StatusCode; str() is the broker's message."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        request_id: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after = retry_after

    @property
    def temporary(self) -> bool:
        """Worth retrying later (the broker or a backend is busy or down)."""
        return self.code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        )


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


def basic_credential(username: str, password: Secret) -> Any:
    """A Credential message (username + password, token, PAT or robot secret)."""
    return registry_pb2.Credential(
        basic=registry_pb2.BasicCredential(username=username, password=password.reveal())
    )


def to_call_error(exc: grpc.RpcError, address: str = "") -> BrokerCallError:
    """The BrokerCallError for a failed call (actionable message when the broker is down)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    trailing: dict[str, Any] = {}
    if hasattr(exc, "trailing_metadata"):
        metadata: Any = exc.trailing_metadata() or ()
        trailing = {str(k): v for k, v in metadata}
    retry = _float(trailing.get("retry-after"))
    where = f" at {address}" if address else ""
    if code is grpc.StatusCode.UNAVAILABLE and _is_transport_failure(details):
        details = (
            f"cannot reach the broker{where}: is `pullbroker serve` running, and do --broker/"
            "--ca/--cert/--key match it? (connection failed or its TLS handshake was refused)"
        )
    elif code is grpc.StatusCode.DEADLINE_EXCEEDED and not details.startswith("the broker"):
        details = f"the broker{where} did not answer in time: check that it is running"
    return BrokerCallError(
        code,
        details or code.name.lower(),
        request_id=str(trailing.get(REQUEST_ID_KEY, "")),
        retry_after=retry,
    )


def _is_transport_failure(details: str) -> bool:
    markers = ("failed to connect", "connection refused", "handshake", "Socket closed", "DNS")
    return any(m.lower() in details.lower() for m in markers)


def _float(value: object) -> float | None:
    try:
        return float(value) if isinstance(value, str | bytes) else None
    except ValueError:
        return None


def _metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_KEY, request_id or uuid.uuid4().hex),)


def _mask(paths: Sequence[str]) -> Any:
    return field_mask_pb2.FieldMask(paths=list(paths))


def _test_request(name: str | None, registry: Any, credential: Any, repository: str) -> Any:
    request = registry_pb2.TestConnectionRequest(credential=credential, repository=repository)
    if name is not None:
        request.name = name
    elif registry is not None:
        request.registry.CopyFrom(registry)
    return request


def _issued(message: Any) -> IssuedPullToken:
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


def _login(message: Any) -> IssuedRegistryLogin:
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


def _login_request(
    image: str, registry: str | None, force_refresh: bool, service_account_token: Secret | None
) -> Any:
    return pull_pb2.IssueRegistryLoginRequest(
        image=image,
        registry=registry or "",
        force_refresh=force_refresh,
        service_account_token=service_account_token.reveal() if service_account_token else "",
    )


def _create_deployment_request(
    deployment_id: str, deployment: Any, inline_registry: Any | None, credential: Any | None
) -> Any:
    request = deployment_pb2.CreateDeploymentRequest(
        deployment_id=deployment_id, deployment=deployment, credential=credential
    )
    if inline_registry is not None:
        request.inline_registry.CopyFrom(inline_registry)
    return request


@dataclass(frozen=True)
class BrokerTarget:
    """Where the broker is and which certificate to present."""

    address: str
    tls: TlsFiles

    @classmethod
    def from_home(
        cls,
        home: Home,
        role: str,
        *,
        address: str | None = None,
        ca: Path | None = None,
        cert: Path | None = None,
        key: Path | None = None,
    ) -> BrokerTarget:
        """The home folder's broker.json and tls/ files, each overridable."""
        tls = TlsFiles.from_home(home, role, ca=ca, cert=cert, key=key)
        return cls(address or home.read_address(), tls)


class BrokerClient:
    """Blocking client; use as a context manager or call close()."""

    def __init__(self, target: BrokerTarget, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._address = target.address
        self._channel = grpc.secure_channel(
            target.address, channel_credentials(target.tls), options=_CHANNEL_OPTIONS
        )
        self._registry = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._pull = pull_pb2_grpc.PullServiceStub(self._channel)
        self._timeout = timeout

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, request: Any, request_id: str | None) -> Any:
        try:
            return method(request, timeout=self._timeout, metadata=_metadata(request_id))
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None

    def create_registry(
        self,
        registry: Any,
        credential: Any | None = None,
        test: bool = False,
        *,
        request_id: str | None = None,
    ) -> Any:
        request = registry_pb2.CreateRegistryRequest(
            registry=registry, credential=credential, test=test
        )
        return self._call(self._registry.CreateRegistry, request, request_id)

    def get_registry(self, name: str, *, request_id: str | None = None) -> Any:
        request = registry_pb2.GetRegistryRequest(name=name)
        return self._call(self._registry.GetRegistry, request, request_id)

    def list_registries(
        self, page_size: int = 0, page_token: str = "", *, request_id: str | None = None
    ) -> Any:
        request = registry_pb2.ListRegistriesRequest(page_size=page_size, page_token=page_token)
        return self._call(self._registry.ListRegistries, request, request_id)

    def iter_registries(self, page_size: int = 0) -> Iterator[Any]:
        """Every registry, following page tokens."""
        token = ""
        while True:
            page = self.list_registries(page_size, token)
            yield from page.registries
            token = page.next_page_token
            if not token:
                return

    def update_registry(
        self,
        registry: Any,
        update_mask: Sequence[str] = (),
        credential: Any | None = None,
        *,
        request_id: str | None = None,
    ) -> Any:
        request = registry_pb2.UpdateRegistryRequest(
            registry=registry, update_mask=_mask(update_mask), credential=credential
        )
        return self._call(self._registry.UpdateRegistry, request, request_id)

    def delete_registry(self, name: str, etag: str = "", *, request_id: str | None = None) -> None:
        request = registry_pb2.DeleteRegistryRequest(name=name, etag=etag)
        self._call(self._registry.DeleteRegistry, request, request_id)

    def test_connection(
        self,
        name: str | None = None,
        registry: Any | None = None,
        credential: Any | None = None,
        repository: str = "",
        *,
        request_id: str | None = None,
    ) -> Any:
        request = _test_request(name, registry, credential, repository)
        return self._call(self._registry.TestConnection, request, request_id)

    def issue_pull_token(
        self,
        image: str,
        registry: str | None = None,
        force_refresh: bool = False,
        *,
        request_id: str | None = None,
    ) -> IssuedPullToken:
        request = pull_pb2.IssuePullTokenRequest(
            image=image, registry=registry or "", force_refresh=force_refresh
        )
        return _issued(self._call(self._pull.IssuePullToken, request, request_id))

    # Deployments, status reports and policy checks (DeploymentService, PolicyService).

    @cached_property
    def _deployments(self) -> Any:
        return deployment_pb2_grpc.DeploymentServiceStub(self._channel)

    @cached_property
    def _reporting(self) -> Any:
        return deployment_pb2_grpc.DeploymentReportingServiceStub(self._channel)

    @cached_property
    def _policy(self) -> Any:
        return policy_pb2_grpc.PolicyServiceStub(self._channel)

    def create_deployment(
        self,
        deployment_id: str,
        deployment: Any,
        inline_registry: Any | None = None,
        credential: Any | None = None,
        *,
        request_id: str | None = None,
    ) -> Any:
        """Create a deployment; an inline registry and credential serve it alone."""
        request = _create_deployment_request(deployment_id, deployment, inline_registry, credential)
        return self._call(self._deployments.CreateDeployment, request, request_id)

    def get_deployment(self, name: str, *, request_id: str | None = None) -> Any:
        request = deployment_pb2.GetDeploymentRequest(name=name)
        return self._call(self._deployments.GetDeployment, request, request_id)

    def list_deployments(
        self,
        page_size: int = 0,
        page_token: str = "",
        *,
        registry: str = "",
        show_terminated: bool = False,
        request_id: str | None = None,
    ) -> Any:
        request = deployment_pb2.ListDeploymentsRequest(
            page_size=page_size,
            page_token=page_token,
            registry=registry,
            show_terminated=show_terminated,
        )
        return self._call(self._deployments.ListDeployments, request, request_id)

    def terminate_deployment(
        self, name: str, etag: str = "", *, request_id: str | None = None
    ) -> Any:
        request = deployment_pb2.TerminateDeploymentRequest(name=name, etag=etag)
        return self._call(self._deployments.TerminateDeployment, request, request_id)

    def watch_deployment(
        self, name: str, *, timeout: float | None = None, request_id: str | None = None
    ) -> Iterator[Any]:
        """The deployment now and on every change until it is terminated (or `timeout`)."""
        request = deployment_pb2.WatchDeploymentRequest(name=name)
        stream = self._deployments.WatchDeployment(
            request, timeout=timeout, metadata=_metadata(request_id)
        )
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None
        finally:
            stream.cancel()

    def report_deployment_status(
        self,
        name: str,
        state: int,
        *,
        digest: str = "",
        failure_category: int = 0,
        message: str = "",
        request_id: str | None = None,
    ) -> Any:
        """Report a status transition (role node): DEPLOYING, DEPLOYED (digest) or FAILED."""
        request = deployment_pb2.ReportDeploymentStatusRequest(
            name=name,
            state=state,  # type: ignore[arg-type]
            digest=digest,
            failure_category=failure_category,  # type: ignore[arg-type]
            message=message,
        )
        return self._call(self._reporting.ReportDeploymentStatus, request, request_id)

    def check_access(
        self, identity: str, image: str, registry: str = "", *, request_id: str | None = None
    ) -> Any:
        """Why the broker's policy allows or denies `identity` pulling `image`."""
        request = policy_pb2.CheckAccessRequest(identity=identity, image=image, registry=registry)
        return self._call(self._policy.CheckAccess, request, request_id)

    def issue_registry_login(
        self,
        image: str,
        registry: str | None = None,
        force_refresh: bool = False,
        *,
        service_account_token: Secret | None = None,
        request_id: str | None = None,
    ) -> IssuedRegistryLogin:
        """A login for container runtimes (IssueRegistryLogin); FAILED_PRECONDITION for
        registries that have none. `service_account_token`: the pod's, for pod-scoped policy."""
        request = _login_request(image, registry, force_refresh, service_account_token)
        return _login(self._call(self._pull.IssueRegistryLogin, request, request_id))


class AsyncBrokerClient:
    """grpc.aio client with the same methods as BrokerClient; `async with` or `await close()`."""

    def __init__(self, target: BrokerTarget, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._address = target.address
        self._channel = grpc.aio.secure_channel(
            target.address, channel_credentials(target.tls), options=_CHANNEL_OPTIONS
        )
        self._registry = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._pull = pull_pb2_grpc.PullServiceStub(self._channel)
        self._timeout = timeout

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    async def _call(self, method: Any, request: Any, request_id: str | None) -> Any:
        try:
            return await method(request, timeout=self._timeout, metadata=_metadata(request_id))
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None

    async def create_registry(
        self,
        registry: Any,
        credential: Any | None = None,
        test: bool = False,
        *,
        request_id: str | None = None,
    ) -> Any:
        request = registry_pb2.CreateRegistryRequest(
            registry=registry, credential=credential, test=test
        )
        return await self._call(self._registry.CreateRegistry, request, request_id)

    async def get_registry(self, name: str, *, request_id: str | None = None) -> Any:
        request = registry_pb2.GetRegistryRequest(name=name)
        return await self._call(self._registry.GetRegistry, request, request_id)

    async def list_registries(
        self, page_size: int = 0, page_token: str = "", *, request_id: str | None = None
    ) -> Any:
        request = registry_pb2.ListRegistriesRequest(page_size=page_size, page_token=page_token)
        return await self._call(self._registry.ListRegistries, request, request_id)

    async def update_registry(
        self,
        registry: Any,
        update_mask: Sequence[str] = (),
        credential: Any | None = None,
        *,
        request_id: str | None = None,
    ) -> Any:
        request = registry_pb2.UpdateRegistryRequest(
            registry=registry, update_mask=_mask(update_mask), credential=credential
        )
        return await self._call(self._registry.UpdateRegistry, request, request_id)

    async def delete_registry(
        self, name: str, etag: str = "", *, request_id: str | None = None
    ) -> None:
        request = registry_pb2.DeleteRegistryRequest(name=name, etag=etag)
        await self._call(self._registry.DeleteRegistry, request, request_id)

    async def test_connection(
        self,
        name: str | None = None,
        registry: Any | None = None,
        credential: Any | None = None,
        repository: str = "",
        *,
        request_id: str | None = None,
    ) -> Any:
        request = _test_request(name, registry, credential, repository)
        return await self._call(self._registry.TestConnection, request, request_id)

    async def issue_pull_token(
        self,
        image: str,
        registry: str | None = None,
        force_refresh: bool = False,
        *,
        request_id: str | None = None,
    ) -> IssuedPullToken:
        request = pull_pb2.IssuePullTokenRequest(
            image=image, registry=registry or "", force_refresh=force_refresh
        )
        return _issued(await self._call(self._pull.IssuePullToken, request, request_id))

    # Deployments, status reports and policy checks (DeploymentService, PolicyService).

    @cached_property
    def _deployments(self) -> Any:
        return deployment_pb2_grpc.DeploymentServiceStub(self._channel)

    @cached_property
    def _reporting(self) -> Any:
        return deployment_pb2_grpc.DeploymentReportingServiceStub(self._channel)

    @cached_property
    def _policy(self) -> Any:
        return policy_pb2_grpc.PolicyServiceStub(self._channel)

    async def create_deployment(
        self,
        deployment_id: str,
        deployment: Any,
        inline_registry: Any | None = None,
        credential: Any | None = None,
        *,
        request_id: str | None = None,
    ) -> Any:
        """Create a deployment; an inline registry and credential serve it alone."""
        request = _create_deployment_request(deployment_id, deployment, inline_registry, credential)
        return await self._call(self._deployments.CreateDeployment, request, request_id)

    async def get_deployment(self, name: str, *, request_id: str | None = None) -> Any:
        request = deployment_pb2.GetDeploymentRequest(name=name)
        return await self._call(self._deployments.GetDeployment, request, request_id)

    async def list_deployments(
        self,
        page_size: int = 0,
        page_token: str = "",
        *,
        registry: str = "",
        show_terminated: bool = False,
        request_id: str | None = None,
    ) -> Any:
        request = deployment_pb2.ListDeploymentsRequest(
            page_size=page_size,
            page_token=page_token,
            registry=registry,
            show_terminated=show_terminated,
        )
        return await self._call(self._deployments.ListDeployments, request, request_id)

    async def terminate_deployment(
        self, name: str, etag: str = "", *, request_id: str | None = None
    ) -> Any:
        request = deployment_pb2.TerminateDeploymentRequest(name=name, etag=etag)
        return await self._call(self._deployments.TerminateDeployment, request, request_id)

    async def watch_deployment(
        self, name: str, *, request_id: str | None = None
    ) -> AsyncIterator[Any]:
        """The deployment now and on every change until it is terminated (bound it with
        asyncio.timeout)."""
        request = deployment_pb2.WatchDeploymentRequest(name=name)
        stream = self._deployments.WatchDeployment(request, metadata=_metadata(request_id))
        try:
            async for item in stream:
                yield item
        except grpc.RpcError as exc:
            raise to_call_error(exc, self._address) from None
        finally:
            stream.cancel()

    async def report_deployment_status(
        self,
        name: str,
        state: int,
        *,
        digest: str = "",
        failure_category: int = 0,
        message: str = "",
        request_id: str | None = None,
    ) -> Any:
        """Report a status transition (role node): DEPLOYING, DEPLOYED (digest) or FAILED."""
        request = deployment_pb2.ReportDeploymentStatusRequest(
            name=name,
            state=state,  # type: ignore[arg-type]
            digest=digest,
            failure_category=failure_category,  # type: ignore[arg-type]
            message=message,
        )
        return await self._call(self._reporting.ReportDeploymentStatus, request, request_id)

    async def check_access(
        self, identity: str, image: str, registry: str = "", *, request_id: str | None = None
    ) -> Any:
        """Why the broker's policy allows or denies `identity` pulling `image`."""
        request = policy_pb2.CheckAccessRequest(identity=identity, image=image, registry=registry)
        return await self._call(self._policy.CheckAccess, request, request_id)

    async def issue_registry_login(
        self,
        image: str,
        registry: str | None = None,
        force_refresh: bool = False,
        *,
        service_account_token: Secret | None = None,
        request_id: str | None = None,
    ) -> IssuedRegistryLogin:
        """A login for container runtimes (IssueRegistryLogin); FAILED_PRECONDITION for
        registries that have none. `service_account_token`: the pod's, for pod-scoped policy."""
        request = _login_request(image, registry, force_refresh, service_account_token)
        return _login(await self._call(self._pull.IssueRegistryLogin, request, request_id))
