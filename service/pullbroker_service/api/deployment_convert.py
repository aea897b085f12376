"""Deployment messages <-> domain values. No I/O; errors are InvalidArgument with field names."""

from __future__ import annotations

from typing import Any

from pullbroker.v1 import deployment_pb2

from pullbroker_service.api.convert import credential_from_proto, kind_from_type, timestamp
from pullbroker_service.app.deployments import NewDeployment
from pullbroker_service.domain.deployment import (
    DeploymentRecord,
    DeploymentState,
    FailureCategory,
    Report,
    Target,
    TargetKind,
)
from pullbroker_service.domain.errors import InvalidArgument
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.infra.logging import scrub

_STATES: dict[DeploymentState, int] = {
    DeploymentState.PENDING_DEPLOY: deployment_pb2.DEPLOYMENT_STATE_PENDING_DEPLOY,
    DeploymentState.DEPLOYING: deployment_pb2.DEPLOYMENT_STATE_DEPLOYING,
    DeploymentState.DEPLOYED: deployment_pb2.DEPLOYMENT_STATE_DEPLOYED,
    DeploymentState.FAILED: deployment_pb2.DEPLOYMENT_STATE_FAILED,
    DeploymentState.TERMINATED: deployment_pb2.DEPLOYMENT_STATE_TERMINATED,
}
_STATE_OF = {v: k for k, v in _STATES.items()}

_CATEGORIES: dict[FailureCategory, int] = {
    FailureCategory.NONE: deployment_pb2.FAILURE_CATEGORY_UNSPECIFIED,
    FailureCategory.AUTHENTICATION: deployment_pb2.FAILURE_CATEGORY_AUTHENTICATION,
    FailureCategory.NOT_ALLOWED: deployment_pb2.FAILURE_CATEGORY_NOT_ALLOWED,
    FailureCategory.NOT_FOUND: deployment_pb2.FAILURE_CATEGORY_NOT_FOUND,
    FailureCategory.REGISTRY_UNREACHABLE: deployment_pb2.FAILURE_CATEGORY_REGISTRY_UNREACHABLE,
    FailureCategory.DIGEST_MISMATCH: deployment_pb2.FAILURE_CATEGORY_DIGEST_MISMATCH,
    FailureCategory.RATE_LIMITED: deployment_pb2.FAILURE_CATEGORY_RATE_LIMITED,
}
_CATEGORY_OF = {v: k for k, v in _CATEGORIES.items()}


def target_from_proto(message: deployment_pb2.DeploymentTarget) -> Target:
    """The domain target of a DeploymentTarget; INVALID_ARGUMENT naming what is missing."""
    which = message.WhichOneof("kind")
    if which == "kubernetes":
        k8s = message.kubernetes
        return Target.of(TargetKind.KUBERNETES, k8s.namespace, k8s.workload)
    if which == "swarm":
        return Target.of(TargetKind.SWARM, message.swarm.service)
    if which == "compose":
        return Target.of(TargetKind.COMPOSE, message.compose.project)
    if which == "nitro_enclave":
        return Target.of(TargetKind.NITRO_ENCLAVE, message.nitro_enclave.name)
    raise InvalidArgument(
        "deployment.target is required: kubernetes {namespace, workload}, swarm {service}, "
        "compose {project} or nitro_enclave {name}"
    )


def target_to_proto(target: Target) -> deployment_pb2.DeploymentTarget:
    message = deployment_pb2.DeploymentTarget()
    if target.kind is TargetKind.KUBERNETES:
        namespace, _, workload = target.path.partition("/")
        message.kubernetes.namespace, message.kubernetes.workload = namespace, workload
    elif target.kind is TargetKind.SWARM:
        message.swarm.service = target.path
    elif target.kind is TargetKind.COMPOSE:
        message.compose.project = target.path
    else:
        message.nitro_enclave.name = target.path
    return message


def new_deployment_from_proto(request: deployment_pb2.CreateDeploymentRequest) -> NewDeployment:
    """A NewDeployment from a CreateDeploymentRequest."""
    if not request.HasField("deployment"):
        raise InvalidArgument("deployment is required (image, target, and registry)")
    deployment = request.deployment
    if not deployment.image.strip():
        raise InvalidArgument("deployment.image is required, e.g. ghcr.io/acme/app:1.2")
    target = target_from_proto(deployment.target)
    inline: tuple[RegistrySpec, Any] | None = None
    if request.HasField("inline_registry"):
        credential = credential_from_proto(request.credential, request.HasField("credential"))
        if credential is None:
            raise InvalidArgument("an inline registry needs its credential (credential)")
        registry = request.inline_registry
        spec = RegistrySpec(
            display_name=registry.display_name,
            kind=kind_from_type(registry.type),
            url=registry.url,
            registry_ca_pem=registry.registry_ca_pem,
            region=registry.region,
        )
        inline = (spec, credential)
    elif request.HasField("credential"):
        raise InvalidArgument("a credential goes with inline_registry (the registry it is for)")
    return NewDeployment(
        deployment_id=request.deployment_id.strip(),
        image=deployment.image.strip(),
        target=target,
        registry=deployment.registry.strip(),
        inline=inline,
    )


def report_from_proto(request: deployment_pb2.ReportDeploymentStatusRequest) -> Report:
    state = _STATE_OF.get(request.state)
    if state is None:
        raise InvalidArgument("state is required: DEPLOYING, DEPLOYED or FAILED")
    category = _CATEGORY_OF.get(request.failure_category)
    if category is None:
        raise InvalidArgument("failure_category is not one this broker knows")
    # A node's failure text may quote what a registry echoed (a pass-through password
    # included): scrubbed when stored, and again when served, for values registered since.
    return Report(state, request.digest.strip(), category, scrub(request.message.strip()))


def deployment_to_proto(record: DeploymentRecord) -> deployment_pb2.Deployment:
    return deployment_pb2.Deployment(
        name=record.resource_name,
        image=record.image,
        registry=f"registries/{record.registry_id}",
        target=target_to_proto(record.target),
        state=_STATES[record.state],  # type: ignore[arg-type]
        failure_category=_CATEGORIES[record.failure_category],  # type: ignore[arg-type]
        message=scrub(record.message),
        digest=record.digest,
        inline_credential=record.inline_credential,
        creator=record.creator,
        reported_by=record.reported_by,
        create_time=timestamp(record.create_time),
        update_time=timestamp(record.update_time),
        etag=record.etag,
    )
