"""ListPullableRegistries: the registry records a node may pull from, for runtime configuration.

A node-local mirror (`pullbroker-sidecar mirror-config`) needs every registry host the node's
policy lets it pull from, without a pod identity (the mirror asks as the node). For each READY
record some rule of the caller lists (and does not limit to pods), the answer gives the
repository globs of those rules, narrowed to the record's own globs: where one glob lies
within the other the narrower is given; a pair that shares no repository is left out; a pair
that overlaps otherwise keeps the record's glob (a mirror configuration may be wider than what
is allowed: every pull is still decided by IssuePullToken). Holds no credential.
"""

from __future__ import annotations

from dataclasses import dataclass

from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.model import RecordState, RegistryRecord
from pullbroker_service.domain.policy import Policy
from pullbroker_service.domain.repository_globs import common_repository, narrower
from pullbroker_service.store.base import MetadataStore

_PAGE = 500


@dataclass(frozen=True)
class Pullable:
    record: RegistryRecord
    repositories: tuple[str, ...]


class PullableRegistries:
    """The ListPullableRegistries use case. Callers have been authorised (role node)."""

    def __init__(self, store: MetadataStore, policy: PolicyProvider) -> None:
        self._store = store
        self._policy = policy

    async def pullable(self, caller: Identity) -> list[Pullable]:
        policy = self._policy.current()
        out = []
        for record in await self._records():
            globs = pullable_globs(policy, caller.name, record)
            if globs:
                out.append(Pullable(record, globs))
        out.sort(key=lambda p: (p.record.host, p.record.display_name))
        return out

    async def _records(self) -> list[RegistryRecord]:
        records: list[RegistryRecord] = []
        after: str | None = None
        while True:
            page = await self._store.list_page(_PAGE, after)
            records.extend(r for r in page if r.state is RecordState.READY)
            if len(page) < _PAGE:
                return records
            after = page[-1].id


def pullable_globs(policy: Policy, identity: str, record: RegistryRecord) -> tuple[str, ...]:
    """The repository globs `identity` may pull from `record` without a pod identity, within
    the record's own globs (see the module docstring); empty: none."""
    allowed: list[str] = []
    names = (record.display_name, record.id)
    for rule in policy.matching(identity):
        if rule.kubernetes is not None:
            continue
        if not any(g.matches(n) for g in rule.registries for n in names):
            continue
        allowed.extend(g.pattern for g in rule.repositories)
    out: list[str] = []
    for glob in allowed:
        for own in record.repositories or (glob,):
            if common_repository(glob, own) is None:
                continue
            kept = narrower(glob, own) or own
            if kept not in out:
                out.append(kept)
    return tuple(out)
