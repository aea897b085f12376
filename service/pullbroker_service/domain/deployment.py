"""Deployments: which workload uses which registry credential, and how its pull went. No I/O.

    PENDING_DEPLOY ──► DEPLOYING ──► DEPLOYED
          │               │   ▲          │
          │               ▼   │          ▼
          └──────────►  FAILED ◄─────────┘        any of these ──► TERMINATED (final)

Nodes report DEPLOYING, DEPLOYED (with the manifest digest) and FAILED (with a category and
a message saying what to check). A node may skip DEPLOYING, report the same state again (a
second node of a DaemonSet), or redeploy (DEPLOYED/FAILED -> DEPLOYING); nothing leaves
TERMINATED.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from datetime import datetime

from pullbroker_service.domain.errors import InvalidArgument, InvalidTransition

RESOURCE_PREFIX = "deployments/"
MAX_MESSAGE = 1024
_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$")


class DeploymentState(enum.StrEnum):
    PENDING_DEPLOY = "pending_deploy"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"
    TERMINATED = "terminated"


class FailureCategory(enum.StrEnum):
    """Why a pull failed, in the words a person acts on ("" when none applies)."""

    NONE = ""
    AUTHENTICATION = "authentication"
    NOT_ALLOWED = "not_allowed"
    NOT_FOUND = "not_found"
    REGISTRY_UNREACHABLE = "registry_unreachable"
    DIGEST_MISMATCH = "digest_mismatch"
    RATE_LIMITED = "rate_limited"


class TargetKind(enum.StrEnum):
    KUBERNETES = "kubernetes"
    SWARM = "swarm"
    COMPOSE = "compose"
    NITRO_ENCLAVE = "nitro_enclave"


REPORTED_STATES = frozenset(
    {DeploymentState.DEPLOYING, DeploymentState.DEPLOYED, DeploymentState.FAILED}
)


@dataclass(frozen=True)
class Target:
    """Where a deployment runs: `path` is "namespace/workload" for Kubernetes, else one name."""

    kind: TargetKind
    path: str

    @classmethod
    def of(cls, kind: TargetKind, *parts: str) -> Target:
        """A validated target; Kubernetes takes (namespace, workload), the others one name."""
        expected = 2 if kind is TargetKind.KUBERNETES else 1
        labels = ("namespace", "workload") if expected == 2 else ("name",)
        if len(parts) != expected:
            raise InvalidArgument(f"a {kind.value} target needs {' and '.join(labels)}")
        for label, part in zip(labels, parts, strict=True):
            if not _NAME_PART.match(part):
                raise InvalidArgument(
                    f"target {kind.value} {label} {part!r} must be letters, digits, '.', '_' "
                    "or '-', starting with a letter or digit"
                )
        return cls(kind, "/".join(parts))

    @property
    def policy_name(self) -> str:
        """How policy `targets` globs see it: "kubernetes:prod/web", "swarm:api"."""
        return f"{self.kind.value}:{self.path}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """The inverse of `policy_name`."""
        kind, _, path = text.partition(":")
        try:
            target_kind = TargetKind(kind)
        except ValueError as exc:
            raise InvalidArgument(f"unknown deployment target kind {kind!r}") from exc
        return cls.of(target_kind, *path.split("/"))


@dataclass(frozen=True)
class Report:
    """A node's status report, validated: state in REPORTED_STATES, digest with DEPLOYED."""

    state: DeploymentState
    digest: str = ""
    category: FailureCategory = FailureCategory.NONE
    message: str = ""

    def __post_init__(self) -> None:
        if self.state not in REPORTED_STATES:
            raise InvalidArgument("a node reports DEPLOYING, DEPLOYED or FAILED, nothing else")
        if self.state is DeploymentState.DEPLOYED and not _DIGEST.match(self.digest):
            raise InvalidArgument("DEPLOYED needs the manifest digest pulled (sha256:<64 hex>)")
        if self.digest and not _DIGEST.match(self.digest):
            raise InvalidArgument("digest must be sha256:<64 hex> (or sha512:<128 hex>)")
        if self.state is not DeploymentState.FAILED and self.category is not FailureCategory.NONE:
            raise InvalidArgument("a failure category goes with FAILED only")
        if len(self.message) > MAX_MESSAGE:
            raise InvalidArgument(f"message is longer than {MAX_MESSAGE} characters")


@dataclass(frozen=True)
class DeploymentRecord:
    """A deployment as the store holds it. `registry_id` is always a registry id; an inline
    credential lives in a registry record of its own that ends with the deployment."""

    id: str
    image: str
    registry_id: str
    inline_credential: bool
    target: Target
    state: DeploymentState
    failure_category: FailureCategory
    message: str
    digest: str
    creator: str
    reported_by: str
    create_time: datetime
    update_time: datetime
    etag: str

    @property
    def resource_name(self) -> str:
        return f"{RESOURCE_PREFIX}{self.id}"

    @property
    def active(self) -> bool:
        return self.state is not DeploymentState.TERMINATED

    def reported(self, report: Report, reporter: str, now: datetime, etag: str) -> DeploymentRecord:
        """This deployment after `report`; InvalidTransition once it is terminated."""
        if not self.active:
            raise InvalidTransition(
                f"deployment {self.id!r} is terminated: create it again to deploy it"
            )
        failed = report.state is DeploymentState.FAILED
        return replace(
            self,
            state=report.state,
            failure_category=report.category if failed else FailureCategory.NONE,
            message=report.message,
            # The last digest deployed stays until another is: it is what still runs.
            digest=report.digest or self.digest,
            reported_by=reporter,
            update_time=now,
            etag=etag,
        )

    def terminated(self, now: datetime, etag: str) -> DeploymentRecord:
        if not self.active:
            raise InvalidTransition(f"deployment {self.id!r} is already terminated")
        return replace(
            self, state=DeploymentState.TERMINATED, message="", update_time=now, etag=etag
        )


def check_deployment_id(value: str) -> str:
    """`value` if it is a valid deployment id (like a Kubernetes name), else InvalidArgument."""
    if not _ID.match(value):
        raise InvalidArgument(
            f"deployment id {value!r} must be 1-63 lowercase letters, digits or '-', "
            "starting with a letter, e.g. web"
        )
    return value


def deployment_id_of(name: str) -> str:
    """The id in "deployments/<id>" or a bare id."""
    if not name:
        raise InvalidArgument("a deployment name is required: deployments/<id> or the id")
    return check_deployment_id(name.removeprefix(RESOURCE_PREFIX))
