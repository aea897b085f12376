"""Audit events: who did what to which credential, and who was given which token. No I/O.

An event holds names, never values: identities, registry and deployment names, repositories,
scopes, digests and a reason a person can read. It has no field a secret or a token could go
in, and the sink scrubs every string against the known secret values once more.

Every event has every key (empty string when it does not apply), so the JSON lines keep one
schema a log pipeline can map.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from pullbroker_service.domain.errors import PermissionDenied, QuotaExceeded, StillReferenced
from pullbroker_service.domain.identity import Identity


class Outcome(enum.StrEnum):
    ALLOWED = "allowed"
    """Done: the token was issued, the credential stored, the deployment created."""

    DENIED = "denied"
    """Refused by policy, ownership, a rate limit or a lifecycle rule."""

    FAILED = "failed"
    """Allowed, but did not happen (the registry refused the credential, a backend is down,
    the input was invalid)."""


class Action(enum.StrEnum):
    TOKEN_ISSUE = "token.issue"  # noqa: S105 - an action name, not a secret
    REGISTRY_CREATE = "registry.create"
    REGISTRY_UPDATE = "registry.update"
    CREDENTIAL_ROTATE = "credential.rotate"
    CREDENTIAL_ROLLBACK = "credential.rollback"
    """The credential version a rotation replaced made current again."""
    REGISTRY_DELETE = "registry.delete"
    CONNECTION_TEST = "connection.test"
    DEPLOYMENT_CREATE = "deployment.create"
    DEPLOYMENT_REPORT = "deployment.report"
    DEPLOYMENT_TERMINATE = "deployment.terminate"
    CREDENTIAL_DELETE = "credential.delete"
    """An inline credential removed from the secret backend when its deployment ended."""


FIELDS = (
    "time",
    "action",
    "outcome",
    "identity",
    "role",
    "registry",
    "repository",
    "scope",
    "deployment",
    "digest",
    "reason",
    "request_id",
)
"""The keys of every audit line, in the order they are written."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audit line. `registry` is "registries/<id>" when known, else what was asked for."""

    time: datetime
    action: Action
    outcome: Outcome
    identity: str
    role: str = ""
    registry: str = ""
    repository: str = ""
    scope: str = ""
    deployment: str = ""
    digest: str = ""
    reason: str = ""
    request_id: str = ""

    def to_dict(self) -> dict[str, str]:
        """The JSON object of the line (time in UTC, ISO 8601, milliseconds)."""
        return {
            "time": self.time.isoformat(timespec="milliseconds"),
            "action": self.action.value,
            "outcome": self.outcome.value,
            "identity": self.identity,
            "role": self.role,
            "registry": self.registry,
            "repository": self.repository,
            "scope": self.scope,
            "deployment": self.deployment,
            "digest": self.digest,
            "reason": self.reason,
            "request_id": self.request_id,
        }


def role_of(identity: Identity | None) -> str:
    """The roles of `identity` as one field ("admin", "node", "admin,node", "")."""
    return ",".join(sorted(identity.roles)) if identity is not None else ""


def outcome_for(exc: BaseException) -> Outcome:
    """DENIED for refusals (policy, ownership, rate limit, lifecycle), else FAILED."""
    if isinstance(exc, PermissionDenied | QuotaExceeded | StillReferenced):
        return Outcome.DENIED
    return Outcome.FAILED
