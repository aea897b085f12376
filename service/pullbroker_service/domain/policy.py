"""The access policy: which identities hold which roles and may pull what. Deny by default.

```yaml
rules:
  - identity: "spiffe://pullbroker.local/node/*"   # glob (domain/globs.py); "CN=name" for CNs
    roles: [node]
    registries: ["*"]          # display names or ids
    repositories: ["team/**"]
  - identity: "spiffe://pullbroker.local/node/*"   # pods' pulls, by their service account
    registries: ["payments"]
    repositories: ["payments/**"]
    kubernetes:
      namespaces: ["payments", "payments-*"]        # namespace globs
      service_accounts: ["payments/puller"]         # "NAMESPACE/NAME" globs
  - identity: "spiffe://pullbroker.local/admin"
    roles: [admin]
    targets: ["kubernetes:prod/*", "compose:**"]   # deployment targets it may create
owner_groups:                  # besides its creator, who may delete a registry
  - name: platform
    members: ["spiffe://pullbroker.local/ops/*"]   # identity globs
    registries: ["team-*"]                         # display names or ids
```

Roles: the first rule matching the identity that grants roles decides them. Pulls: a pull is
allowed when some rule matching the identity lists both the registry and the repository.
(Grants are unioned per rule, never across rules: rule A's registries do not combine with
rule B's repositories.) A rule with a `kubernetes` key grants its pulls only to a request that
carries a verified pod identity (the pod's service-account token, see domain/pod_identity.py)
whose namespace matches one of `namespaces` and whose "NAMESPACE/NAME" matches one of
`service_accounts` (each given list must match; one may be left out). Rules without the key
grant every request of the identity, pod or not: to scope a node's pulls by pod, give every
rule of that node's registries a `kubernetes` key. Deployment targets
("kubernetes:NAMESPACE/WORKLOAD", "swarm:SERVICE", "compose:PROJECT", "nitro_enclave:NAME"):
allowed when a rule matching the identity lists a matching `targets` glob. Deleting a
registry: its creator, or a member of an owner group whose `registries` match it. Everything
else is denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pullbroker_service.domain.errors import InvalidPolicy
from pullbroker_service.domain.globs import Glob, GlobError
from pullbroker_service.domain.identity import KNOWN_ROLES
from pullbroker_service.domain.pod_identity import PodIdentity

_RULE_KEYS = ("identity", "roles", "registries", "repositories", "targets", "kubernetes")
_KUBERNETES_KEYS = ("namespaces", "service_accounts")
_TOP_KEYS = ("rules", "owner_groups")
_GROUP_KEYS = ("name", "members", "registries")
TARGET_KINDS = ("kubernetes", "swarm", "compose", "nitro_enclave")


class RegistryNames(Protocol):
    """What a rule's `registries` globs are matched against (a RegistryRecord fits)."""

    @property
    def id(self) -> str: ...

    @property
    def display_name(self) -> str: ...


@dataclass(frozen=True)
class KubernetesScope:
    """A rule's `kubernetes` key: the pods whose pulls it grants (an empty list: any)."""

    namespaces: tuple[Glob, ...] = ()
    service_accounts: tuple[Glob, ...] = ()

    def matches(self, pod: PodIdentity) -> bool:
        in_namespace = not self.namespaces or any(g.matches(pod.namespace) for g in self.namespaces)
        return in_namespace and (
            not self.service_accounts
            or any(g.matches(pod.service_account_ref) for g in self.service_accounts)
        )

    def describe(self) -> str:
        parts = [
            f"{label} {[g.pattern for g in globs]}"
            for label, globs in (
                ("namespaces", self.namespaces),
                ("service accounts", self.service_accounts),
            )
            if globs
        ]
        return " and ".join(parts)


@dataclass(frozen=True)
class Rule:
    """One rule of the policy file; `number` counts from 1 in file order."""

    number: int
    identity: Glob
    roles: frozenset[str]
    registries: tuple[Glob, ...]
    repositories: tuple[Glob, ...]
    targets: tuple[Glob, ...] = ()
    kubernetes: KubernetesScope | None = None

    def describe(self) -> str:
        return f"rule {self.number} (identity {self.identity.pattern!r})"

    def lists(self, registry: RegistryNames, repository: str) -> bool:
        """Whether the rule names both the registry and the repository (pods aside)."""
        names = _names(registry)
        return any(g.matches(n) for g in self.registries for n in names) and any(
            g.matches(repository) for g in self.repositories
        )

    def grants_pull(
        self, registry: RegistryNames, repository: str, pod: PodIdentity | None = None
    ) -> bool:
        return self.lists(registry, repository) and self.admits(pod)

    def admits(self, pod: PodIdentity | None) -> bool:
        """Whether the rule's `kubernetes` key (if any) lets this pod (None: no pod) pull."""
        if self.kubernetes is None:
            return True
        return pod is not None and self.kubernetes.matches(pod)


def _names(registry: RegistryNames) -> tuple[str, str]:
    return registry.display_name, registry.id


@dataclass(frozen=True)
class OwnerGroup:
    """Identities (besides a registry's creator) that may delete the registries listed."""

    name: str
    members: tuple[Glob, ...]
    registries: tuple[Glob, ...]

    def owns(self, registry: RegistryNames) -> bool:
        return any(g.matches(n) for g in self.registries for n in _names(registry))

    def has_member(self, identity_name: str) -> bool:
        return any(g.matches(identity_name) for g in self.members)


@dataclass(frozen=True)
class Decision:
    """The outcome of a pull check and the rule that decided it (None: nothing matched)."""

    allowed: bool
    rule: Rule | None
    reason: str


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    owner_groups: tuple[OwnerGroup, ...] = ()

    @classmethod
    def from_mapping(cls, data: object) -> Policy:
        """Build a policy from parsed YAML; InvalidPolicy names the rule and key at fault."""
        if not isinstance(data, Mapping):
            raise InvalidPolicy("the policy must be a mapping with a 'rules' list")
        unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
        if unknown:
            raise InvalidPolicy(f"unknown top-level key(s) {unknown}: expected {list(_TOP_KEYS)}")
        rules = data.get("rules")
        if not isinstance(rules, list):
            raise InvalidPolicy("the policy needs a 'rules' list (it may be empty: deny all)")
        groups = data.get("owner_groups", [])
        if not isinstance(groups, list):
            raise InvalidPolicy("'owner_groups' must be a list of {name, members, registries}")
        return cls(
            tuple(_parse_rule(number, raw) for number, raw in enumerate(rules, start=1)),
            _parse_groups(groups),
        )

    def matching(self, identity_name: str) -> list[Rule]:
        return [rule for rule in self.rules if rule.identity.matches(identity_name)]

    def roles_for(self, identity_name: str) -> frozenset[str]:
        for rule in self.matching(identity_name):
            if rule.roles:
                return rule.roles
        return frozenset()

    def allows_pull(
        self,
        identity_name: str,
        registry: RegistryNames,
        repository: str,
        pod: PodIdentity | None = None,
    ) -> bool:
        return self.explain(identity_name, registry, repository, pod).allowed

    def explain(
        self,
        identity_name: str,
        registry: RegistryNames,
        repository: str,
        pod: PodIdentity | None = None,
    ) -> Decision:
        """Which rule lets `identity_name` (for `pod`, when a verified one came with the
        request) pull `repository` from `registry`, or why none does."""
        matching = self.matching(identity_name)
        listing = [rule for rule in matching if rule.lists(registry, repository)]
        for rule in listing:
            if rule.admits(pod):
                to = f" to {pod.describe()}" if pod is not None and rule.kubernetes else ""
                return Decision(True, rule, f"{rule.describe()} grants pull{to}")
        if not matching:
            reason = f"no rule matches identity {identity_name!r}"
        elif listing:
            reason = _pod_refused(listing[0], registry, repository, pod)
        else:
            reason = (
                f"no rule for identity {identity_name!r} lists registry "
                f"{registry.display_name!r} together with repository {repository!r}"
            )
        return Decision(False, None, reason)

    def explain_target(self, identity_name: str, target: str) -> Decision:
        """Which rule lets `identity_name` deploy to `target` ("kubernetes:prod/web"), or why
        none does."""
        for rule in self.matching(identity_name):
            if any(g.matches(target) for g in rule.targets):
                return Decision(True, rule, f"{rule.describe()} allows target {target}")
        return Decision(
            False,
            None,
            f"no rule for identity {identity_name!r} lists deployment target {target!r} "
            "in its 'targets'",
        )

    def explain_delete(self, identity_name: str, registry: RegistryNames, creator: str) -> Decision:
        """Whether `identity_name` may delete `registry`: its creator, or an owner group."""
        if identity_name == creator:
            return Decision(
                True, None, f"{identity_name} created registry {registry.display_name!r}"
            )
        owners = [g for g in self.owner_groups if g.owns(registry)]
        for group in owners:
            if group.has_member(identity_name):
                return Decision(True, None, f"{identity_name} is in owner group {group.name!r}")
        groups = ", ".join(repr(g.name) for g in owners)
        also = f" or a member of owner group(s) {groups}" if groups else ""
        return Decision(
            False,
            None,
            f"only its creator {creator or '(unknown)'}{also} may delete registry "
            f"{registry.display_name!r}",
        )


def _pod_refused(
    rule: Rule, registry: RegistryNames, repository: str, pod: PodIdentity | None
) -> str:
    scope = rule.kubernetes.describe() if rule.kubernetes else ""
    listed = (
        f"{rule.describe()} lists registry {registry.display_name!r} and repository "
        f"{repository!r} only for Kubernetes pods with {scope}"
    )
    if pod is None:
        return (
            f"{listed}, and the request carried no service-account token (the kubelet "
            "CredentialProviderConfig must set tokenAttributes)"
        )
    return f"{listed}, not for {pod.describe()}"


def _parse_rule(number: int, raw: object) -> Rule:
    where = f"rule {number}"
    if not isinstance(raw, Mapping):
        raise InvalidPolicy(f"{where}: must be a mapping with an 'identity' key")
    identity = raw.get("identity")
    if not isinstance(identity, str) or not identity:
        raise InvalidPolicy(f"{where}: 'identity' is required (a glob, e.g. spiffe://x/node/*)")
    where = f"rule {number} (identity {identity!r})"
    unknown = sorted(str(k) for k in raw if k not in _RULE_KEYS)
    if unknown:
        raise InvalidPolicy(f"{where}: unknown key(s) {unknown}; expected {list(_RULE_KEYS)}")
    roles = frozenset(_strings(raw.get("roles", []), where, "roles"))
    bad_roles = sorted(roles - KNOWN_ROLES)
    if bad_roles:
        raise InvalidPolicy(
            f"{where}: unknown role(s) {bad_roles}; roles are {sorted(KNOWN_ROLES)}"
        )
    registries = _globs(raw.get("registries", []), where, "registries")
    repositories = _globs(raw.get("repositories", []), where, "repositories")
    if bool(registries) != bool(repositories):
        raise InvalidPolicy(
            f"{where}: 'registries' and 'repositories' go together: give both or neither"
        )
    targets = _target_globs(raw.get("targets", []), where)
    kubernetes = _kubernetes_scope(raw.get("kubernetes"), where)
    if kubernetes is not None and not registries:
        raise InvalidPolicy(
            f"{where}: 'kubernetes' narrows pull grants to pods: give it with 'registries' "
            "and 'repositories'"
        )
    identity_glob = _glob(identity, where, "identity")
    return Rule(number, identity_glob, roles, registries, repositories, targets, kubernetes)


def _kubernetes_scope(value: object, where: str) -> KubernetesScope | None:
    if value is None:
        return None
    example = "e.g. {namespaces: [team-a], service_accounts: [team-a/puller]}"
    if not isinstance(value, Mapping):
        raise InvalidPolicy(f"{where}: 'kubernetes' must be a mapping, {example}")
    unknown = sorted(str(k) for k in value if k not in _KUBERNETES_KEYS)
    if unknown:
        raise InvalidPolicy(
            f"{where}: unknown key(s) {unknown} in 'kubernetes'; expected {list(_KUBERNETES_KEYS)}"
        )
    namespaces = _globs(value.get("namespaces", []), where, "kubernetes.namespaces")
    accounts = _globs(value.get("service_accounts", []), where, "kubernetes.service_accounts")
    if not namespaces and not accounts:
        raise InvalidPolicy(
            f"{where}: 'kubernetes' must list namespaces, service_accounts or both, {example}"
        )
    for glob in namespaces:
        if "/" in glob.pattern:
            raise InvalidPolicy(
                f"{where}: 'kubernetes.namespaces' entry {glob.pattern!r} is a namespace glob "
                "and has no '/' (service accounts go in 'kubernetes.service_accounts')"
            )
    for glob in accounts:
        namespace, slash, name = glob.pattern.partition("/")
        if not slash or not namespace or not name or "/" in name:
            raise InvalidPolicy(
                f"{where}: 'kubernetes.service_accounts' entry {glob.pattern!r} must be "
                "NAMESPACE/NAME, e.g. team-a/puller or team-a/*"
            )
    return KubernetesScope(namespaces, accounts)


def _target_globs(value: object, where: str) -> tuple[Glob, ...]:
    globs = _globs(value, where, "targets")
    for glob in globs:
        kind, colon, _ = glob.pattern.partition(":")
        if glob.pattern in ("*", "**") or (colon and (kind in TARGET_KINDS or "*" in kind)):
            continue
        raise InvalidPolicy(
            f"{where}: 'targets' entry {glob.pattern!r} must be KIND:NAME with KIND one of "
            f"{', '.join(TARGET_KINDS)} (e.g. kubernetes:prod/*), or '**' for every target"
        )
    return globs


def _parse_groups(groups: list[object]) -> tuple[OwnerGroup, ...]:
    parsed: list[OwnerGroup] = []
    for number, raw in enumerate(groups, start=1):
        where = f"owner group {number}"
        if not isinstance(raw, Mapping):
            raise InvalidPolicy(f"{where}: must be a mapping with name, members and registries")
        unknown = sorted(str(k) for k in raw if k not in _GROUP_KEYS)
        if unknown:
            raise InvalidPolicy(f"{where}: unknown key(s) {unknown}; expected {list(_GROUP_KEYS)}")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidPolicy(f"{where}: 'name' is required, e.g. platform")
        if any(g.name == name for g in parsed):
            raise InvalidPolicy(f"{where}: the name {name!r} is used twice")
        where = f"owner group {name!r}"
        members = _globs(raw.get("members", []), where, "members")
        registries = _globs(raw.get("registries", []), where, "registries")
        if not members or not registries:
            raise InvalidPolicy(f"{where}: 'members' and 'registries' must both list something")
        parsed.append(OwnerGroup(name, members, registries))
    return tuple(parsed)


def _strings(value: object, where: str, key: str) -> list[str]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise InvalidPolicy(f"{where}: '{key}' must be a list of strings")
    items = list(value)
    if not all(isinstance(item, str) and item for item in items):
        raise InvalidPolicy(f"{where}: '{key}' must be a list of non-empty strings")
    return items


def _globs(value: object, where: str, key: str) -> tuple[Glob, ...]:
    return tuple(_glob(text, where, key) for text in _strings(value, where, key))


def _glob(text: str, where: str, key: str) -> Glob:
    try:
        return Glob(text)
    except GlobError as exc:
        raise InvalidPolicy(f"{where}: '{key}': {exc}") from exc
