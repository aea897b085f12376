"""DeploymentService (role admin) and DeploymentReportingService (role node): thin glue over
the Deployments use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from pullbroker.v1 import deployment_pb2, deployment_pb2_grpc

from pullbroker_service.api import deployment_convert as convert
from pullbroker_service.api.context import Context
from pullbroker_service.api.interceptors import current_caller
from pullbroker_service.app.deployments import NewDeployment
from pullbroker_service.domain.deployment import DeploymentRecord, Report
from pullbroker_service.domain.errors import InvalidArgument
from pullbroker_service.domain.identity import Identity


class DeploymentUseCases(Protocol):
    """What the servicers need of `pullbroker_service.app.deployments.Deployments`."""

    async def create(self, caller: Identity, new: NewDeployment) -> DeploymentRecord: ...

    async def get(self, name: str) -> DeploymentRecord: ...

    async def list(
        self, page_size: int, page_token: str, *, registry: str = "", include_terminated: bool
    ) -> tuple[list[DeploymentRecord], str]: ...

    async def terminate(self, caller: Identity, name: str, etag: str = "") -> DeploymentRecord: ...

    def watch(self, name: str) -> AsyncIterator[DeploymentRecord]: ...

    async def report(self, caller: Identity, name: str, report: Report) -> DeploymentRecord: ...


class DeploymentServicer(deployment_pb2_grpc.DeploymentServiceServicer):
    """Each method converts, calls one use case, converts back; errors map in the guard."""

    def __init__(self, deployments: DeploymentUseCases) -> None:
        self._deployments = deployments

    async def CreateDeployment(
        self, request: deployment_pb2.CreateDeploymentRequest, context: Context
    ) -> deployment_pb2.Deployment:
        new = convert.new_deployment_from_proto(request)
        record = await self._deployments.create(current_caller(), new)
        return convert.deployment_to_proto(record)

    async def GetDeployment(
        self, request: deployment_pb2.GetDeploymentRequest, context: Context
    ) -> deployment_pb2.Deployment:
        record = await self._deployments.get(_required_name(request.name))
        return convert.deployment_to_proto(record)

    async def ListDeployments(
        self, request: deployment_pb2.ListDeploymentsRequest, context: Context
    ) -> deployment_pb2.ListDeploymentsResponse:
        records, next_token = await self._deployments.list(
            request.page_size,
            request.page_token,
            registry=request.registry.strip(),
            include_terminated=request.show_terminated,
        )
        return deployment_pb2.ListDeploymentsResponse(
            deployments=[convert.deployment_to_proto(r) for r in records],
            next_page_token=next_token,
        )

    async def TerminateDeployment(
        self, request: deployment_pb2.TerminateDeploymentRequest, context: Context
    ) -> deployment_pb2.Deployment:
        name = _required_name(request.name)
        record = await self._deployments.terminate(current_caller(), name, request.etag)
        return convert.deployment_to_proto(record)

    async def WatchDeployment(
        self, request: deployment_pb2.WatchDeploymentRequest, context: Context
    ) -> AsyncIterator[deployment_pb2.Deployment]:
        async for record in self._deployments.watch(_required_name(request.name)):
            yield convert.deployment_to_proto(record)


class DeploymentReportingServicer(deployment_pb2_grpc.DeploymentReportingServiceServicer):
    """Nodes report status transitions of the deployments whose images they pull."""

    def __init__(self, deployments: DeploymentUseCases) -> None:
        self._deployments = deployments

    async def ReportDeploymentStatus(
        self, request: deployment_pb2.ReportDeploymentStatusRequest, context: Context
    ) -> deployment_pb2.Deployment:
        report = convert.report_from_proto(request)
        name = _required_name(request.name)
        record = await self._deployments.report(current_caller(), name, report)
        return convert.deployment_to_proto(record)


def _required_name(value: str) -> str:
    if not value.strip():
        raise InvalidArgument("name is required: deployments/<id> or the deployment id")
    return value.strip()
