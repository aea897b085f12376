"""Policy decisions remembered per policy version: the token hot path asks the same questions.

A Policy is immutable and PolicySource hands out a new object when the file changes, so a
memo keyed on the policy object is exact: it is dropped the moment a reload happens.
"""

from __future__ import annotations

from typing import TypeVar

from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.domain.pod_identity import PodIdentity
from pullbroker_service.domain.policy import Decision, Policy, RegistryNames

# Distinct (identity, registry, repository, service account) keys a broker sees are few; the
# bound only guards against a caller cycling through made-up repository names.
MAX_ENTRIES = 16_384
_NO_POD = ("", "", "")

DecisionKey = tuple[str, str, str, str, tuple[str, str, str]]

K = TypeVar("K")
V = TypeVar("V")


class PolicyMemo:
    """`roles_for` and `explain` of the current policy, remembered until the policy changes."""

    def __init__(self, provider: PolicyProvider) -> None:
        self._provider = provider
        self._policy: Policy | None = None
        self._roles: dict[str, frozenset[str]] = {}
        self._decisions: dict[DecisionKey, Decision] = {}

    def current(self) -> Policy:
        policy = self._provider.current()
        if policy is not self._policy:
            self._policy = policy
            self._roles = {}
            self._decisions = {}
        return policy

    def roles_for(self, identity_name: str) -> frozenset[str]:
        policy = self.current()
        roles = self._roles.get(identity_name)
        if roles is None:
            roles = policy.roles_for(identity_name)
            _bounded_put(self._roles, identity_name, roles)
        return roles

    def explain(
        self,
        identity_name: str,
        registry: RegistryNames,
        repository: str,
        pod: PodIdentity | None = None,
    ) -> Decision:
        policy = self.current()
        # Only what the policy looks at: pods of one service account share their decisions.
        pod_key = pod.decision_key if pod is not None else _NO_POD
        key = (identity_name, registry.id, registry.display_name, repository, pod_key)
        decision = self._decisions.get(key)
        if decision is None:
            decision = policy.explain(identity_name, registry, repository, pod)
            _bounded_put(self._decisions, key, decision)
        return decision


def _bounded_put(memo: dict[K, V], key: K, value: V) -> None:
    if len(memo) >= MAX_ENTRIES:
        memo.clear()  # rare; recomputing is cheap, an unbounded dict is not
    memo[key] = value
