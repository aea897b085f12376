"""AsyncBrokerClient: the grpc.aio twin of BrokerClient (broker.py), method for method."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from typing import Any

import grpc
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

from pullbroker_client.broker_errors import to_call_error
from pullbroker_client.broker_messages import (
    IssuedPullToken,
    IssuedRegistryLogin,
    create_deployment_request,
    field_mask,
    issued_login,
    issued_token,
    login_request,
    test_request,
)
from pullbroker_client.broker_target import (
    CHANNEL_OPTIONS,
    DEFAULT_TIMEOUT,
    BrokerTarget,
    call_metadata,
)
from pullbroker_client.secret import Secret
from pullbroker_client.tls import channel_credentials


class AsyncBrokerClient:
    """grpc.aio client with the same methods as BrokerClient; `async with` or `await close()`."""

    def __init__(self, target: BrokerTarget, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._address = target.address
        self._channel = grpc.aio.secure_channel(
            target.address, channel_credentials(target.tls), options=CHANNEL_OPTIONS
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
            return await method(request, timeout=self._timeout, metadata=call_metadata(request_id))
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
            registry=registry, update_mask=field_mask(update_mask), credential=credential
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
        request = test_request(name, registry, credential, repository)
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
        return issued_token(await self._call(self._pull.IssuePullToken, request, request_id))

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
        request = create_deployment_request(deployment_id, deployment, inline_registry, credential)
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
        stream = self._deployments.WatchDeployment(request, metadata=call_metadata(request_id))
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
        request = login_request(image, registry, force_refresh, service_account_token)
        return issued_login(await self._call(self._pull.IssueRegistryLogin, request, request_id))
