"""Credential lifecycle rules: who may delete a registry, and when it may not be deleted at all.

A registry may be deleted by the identity that created it, or by a member of an owner group
the policy names for it (`owner_groups`), and only while no deployment that is not
terminated uses it. A deployment being created at the same moment re-checks that its
registry still exists after it is stored (app/deployments.py), so the two cannot cross.
"""

from __future__ import annotations

from typing import Protocol

from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.domain.deployment import DeploymentRecord
from pullbroker_service.domain.errors import NotOwner, StillReferenced
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import RegistryRecord
from pullbroker_service.domain.policy import Policy


class DeploymentReferences(Protocol):
    """What deletion asks of the deployment store (store/deployments.py)."""

    async def referencing(self, registry_id: str) -> list[DeploymentRecord]: ...


class DeletionRules:
    """Checks a delete; without a policy only the creator may delete, without a deployment
    store nothing counts as referenced."""

    def __init__(
        self,
        policy: PolicyProvider | None = None,
        deployments: DeploymentReferences | None = None,
    ) -> None:
        self._policy = policy
        self._deployments = deployments

    async def check(self, caller: Identity, record: RegistryRecord) -> None:
        """Raise NotOwner or StillReferenced if `caller` may not delete `record` now."""
        policy = self._policy.current() if self._policy is not None else Policy()
        decision = policy.explain_delete(caller.name, record, record.creator)
        if not decision.allowed:
            raise NotOwner(
                f"identity {caller.name} may not delete registry {record.display_name!r}: "
                f"{decision.reason} (owner_groups in policy.yaml)"
            )
        if self._deployments is None:
            return
        users = await self._deployments.referencing(record.id)
        if users:
            names = ", ".join(d.id for d in users)
            raise StillReferenced(
                f"registry {record.display_name!r} is still used by deployment(s) {names}: "
                "terminate them first (pullbroker deployment terminate NAME)"
            )
