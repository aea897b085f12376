"""Reporting a deployment's status to the broker: DEPLOYING, DEPLOYED (digest), FAILED (why).

`pull_reported` wraps one pull: DEPLOYING before it, DEPLOYED with the manifest digest after
it, or FAILED with a category and a message saying what to check. The pull's own outcome
always wins: a report the broker cannot take is passed to `warn` and the pull's result (or
error) is what the caller gets.

Failure categories, from the errors a pull meets:

    registry: CredentialRejected, AuthenticationRequired     -> AUTHENTICATION
              NotAllowed                                      -> NOT_ALLOWED
              ManifestUnknown, BlobUnknown, NameUnknown       -> NOT_FOUND
              RegistryUnreachable, RegistryTLSError           -> REGISTRY_UNREACHABLE
              RateLimited                                     -> RATE_LIMITED
              DigestMismatch (registry client or sidecar)     -> DIGEST_MISMATCH
    broker:   PERMISSION_DENIED -> NOT_ALLOWED, NOT_FOUND -> NOT_FOUND,
              RESOURCE_EXHAUSTED -> RATE_LIMITED, UNAVAILABLE -> REGISTRY_UNREACHABLE,
              FAILED_PRECONDITION (the stored credential was refused) -> AUTHENTICATION
    anything else                                             -> UNSPECIFIED (message says)
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, TypeAlias, TypeVar

import grpc
from pullbroker.v1 import deployment_pb2
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.errors import ClientError
from pullbroker_client.registry import errors as registry_errors

from pullbroker_sidecar import errors as sidecar

MAX_MESSAGE = 1024

T = TypeVar("T")
if TYPE_CHECKING:  # ValueType exists only in the generated stubs
    Category: TypeAlias = deployment_pb2.FailureCategory.ValueType
    State: TypeAlias = deployment_pb2.DeploymentState.ValueType

AUTHENTICATION = deployment_pb2.FAILURE_CATEGORY_AUTHENTICATION
NOT_ALLOWED = deployment_pb2.FAILURE_CATEGORY_NOT_ALLOWED
NOT_FOUND = deployment_pb2.FAILURE_CATEGORY_NOT_FOUND
UNREACHABLE = deployment_pb2.FAILURE_CATEGORY_REGISTRY_UNREACHABLE
DIGEST_MISMATCH = deployment_pb2.FAILURE_CATEGORY_DIGEST_MISMATCH
RATE_LIMITED = deployment_pb2.FAILURE_CATEGORY_RATE_LIMITED
UNSPECIFIED = deployment_pb2.FAILURE_CATEGORY_UNSPECIFIED

# (category, what to check) per registry error class; the most specific class wins.
_REGISTRY: dict[type[Exception], tuple[Category, str]] = {
    registry_errors.CredentialRejected: (AUTHENTICATION, "authentication failed"),
    registry_errors.AuthenticationRequired: (AUTHENTICATION, "authentication failed"),
    registry_errors.NotAllowed: (NOT_ALLOWED, "not allowed to pull"),
    registry_errors.NotFoundError: (NOT_FOUND, "image or tag not found"),
    registry_errors.RegistryUnreachable: (UNREACHABLE, "registry unreachable"),
    registry_errors.RegistryTLSError: (UNREACHABLE, "registry unreachable (TLS)"),
    registry_errors.RateLimited: (RATE_LIMITED, "rate limited"),
    registry_errors.DigestMismatch: (DIGEST_MISMATCH, "digest mismatch"),
    sidecar.DigestMismatch: (DIGEST_MISMATCH, "digest mismatch"),
}
_BROKER: dict[grpc.StatusCode, tuple[Category, str]] = {
    grpc.StatusCode.PERMISSION_DENIED: (NOT_ALLOWED, "not allowed to pull"),
    grpc.StatusCode.NOT_FOUND: (NOT_FOUND, "image or tag not found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (RATE_LIMITED, "rate limited"),
    grpc.StatusCode.UNAVAILABLE: (UNREACHABLE, "registry unreachable"),
    grpc.StatusCode.FAILED_PRECONDITION: (AUTHENTICATION, "the broker could not get a token"),
}


class StatusReporter(Protocol):
    """What the broker client offers (`AsyncBrokerClient.report_deployment_status`)."""

    async def report_deployment_status(
        self,
        name: str = "",
        state: State = deployment_pb2.DEPLOYMENT_STATE_UNSPECIFIED,
        digest: str = "",
        failure_category: Category = UNSPECIFIED,
        message: str = "",
    ) -> deployment_pb2.Deployment: ...


def failure_of(exc: BaseException) -> tuple[Category, str]:
    """(FailureCategory value, message) for an error a pull failed with."""
    if isinstance(exc, BrokerCallError):
        category, label = _BROKER.get(exc.code, (UNSPECIFIED, "the broker refused the token"))
        return category, _message(label, exc.message)
    for cls in type(exc).__mro__:
        if cls in _REGISTRY:
            category, label = _REGISTRY[cls]
            return category, _message(label, str(exc))
    return UNSPECIFIED, _message("pull failed", str(exc) or type(exc).__name__)


async def report_deploying(broker: StatusReporter, deployment: str) -> None:
    await broker.report_deployment_status(deployment, deployment_pb2.DEPLOYMENT_STATE_DEPLOYING)


async def report_deployed(broker: StatusReporter, deployment: str, digest: str) -> None:
    await broker.report_deployment_status(
        deployment, deployment_pb2.DEPLOYMENT_STATE_DEPLOYED, digest=digest
    )


async def report_failed(broker: StatusReporter, deployment: str, exc: BaseException) -> None:
    category, message = failure_of(exc)
    await broker.report_deployment_status(
        deployment,
        deployment_pb2.DEPLOYMENT_STATE_FAILED,
        failure_category=category,
        message=message,
    )


async def pull_reported(
    broker: StatusReporter,
    deployment: str,
    pull: Callable[[], Awaitable[T]],
    digest_of: Callable[[T], str],
    *,
    warn: Callable[[str], None] | None = None,
) -> T:
    """Run `pull`, reporting DEPLOYING, then DEPLOYED (`digest_of(result)`) or FAILED."""
    say = warn or _stderr
    await _quietly(report_deploying(broker, deployment), deployment, say)
    try:
        result = await pull()
    except (sidecar.SidecarError, ClientError) as exc:
        await _quietly(report_failed(broker, deployment, exc), deployment, say)
        raise
    await _quietly(report_deployed(broker, deployment, digest_of(result)), deployment, say)
    return result


async def _quietly(report: Awaitable[None], deployment: str, warn: Callable[[str], None]) -> None:
    try:
        await report
    except ClientError as exc:
        warn(f"could not report the status of deployment {deployment} to the broker: {exc}")


def _message(label: str, detail: str) -> str:
    text = f"{label}: {detail}" if detail else label
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _stderr(line: str) -> None:
    print(f"pullbroker-sidecar: warning: {line}", file=sys.stderr)
