"""Explaining the live policy: may this identity pull this image, and which rule decides?

What `pullbroker policy check IDENTITY IMAGE` shows. It picks the registry record exactly as
the token path does (named, else the record of the image's host whose repository globs match
it best) and asks the policy the same question, so the answer is the one a node would meet,
without minting.
"""

from __future__ import annotations

from dataclasses import dataclass

from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.reference import parse_reference

from pullbroker_service.app.lookup import resolve
from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.app.tokens import choose_record
from pullbroker_service.domain.errors import (
    AmbiguousRegistry,
    InvalidArgument,
    InvalidReference,
    RegistryNotFound,
)
from pullbroker_service.domain.hosts import canonical_image_host
from pullbroker_service.domain.model import RegistryRecord
from pullbroker_service.store.base import MetadataStore


@dataclass(frozen=True)
class AccessExplanation:
    """The decision, its reason, the deciding rule (0: none) and what it was decided on."""

    allowed: bool
    reason: str
    rule: int
    roles: frozenset[str]
    registry: str
    repository: str


class AccessChecker:
    """Policy decisions for CheckAccess (role admin)."""

    def __init__(self, store: MetadataStore, policy: PolicyProvider) -> None:
        self._store = store
        self._policy = policy

    async def check(self, identity: str, image: str, registry: str | None) -> AccessExplanation:
        if not identity.strip():
            raise InvalidArgument("identity is required: a spiffe:// ID or CN=<common name>")
        try:
            ref = parse_reference(image)
        except registry_errors.InvalidReference as exc:
            raise InvalidReference(str(exc)) from exc
        policy = self._policy.current()
        roles = policy.roles_for(identity)
        host = canonical_image_host(ref.registry_host)
        record, why_none = await self._choose(host, ref.repository, registry)
        if record is None:
            return AccessExplanation(False, why_none, 0, roles, "", ref.repository)
        if canonical_image_host(record.host) != host:
            reason = (
                f"registry {record.display_name!r} holds a credential for {record.host}, "
                f"not for the image's host {host}"
            )
            return AccessExplanation(False, reason, 0, roles, record.resource_name, ref.repository)
        decision = policy.explain(identity, record, ref.repository)
        if decision.allowed and "node" not in roles:
            reason = f"{decision.reason}, but the identity lacks role 'node' to ask for tokens"
            rule = decision.rule.number if decision.rule else 0
            return AccessExplanation(
                False, reason, rule, roles, record.resource_name, ref.repository
            )
        return AccessExplanation(
            decision.allowed,
            decision.reason,
            decision.rule.number if decision.rule else 0,
            roles,
            record.resource_name,
            ref.repository,
        )

    async def _choose(
        self, host: str, repository: str, registry: str | None
    ) -> tuple[RegistryRecord | None, str]:
        if registry:
            return await resolve(self._store, registry), ""
        found = await self._store.find_by_host(host)
        if not found:
            return None, f"no registry is registered for host {host}"
        try:
            return choose_record(found, host, repository), ""
        except (RegistryNotFound, AmbiguousRegistry) as exc:
            return None, str(exc)
