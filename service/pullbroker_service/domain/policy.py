"""The access policy: which identities hold which roles and may pull what. Deny by default.

```yaml
rules:
  - identity: "spiffe://pullbroker.local/node/*"   # glob (domain/globs.py); "CN=name" for CNs
    roles: [node]
    registries: ["*"]          # display names or ids
    repositories: ["team/**"]
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
rule B's repositories.) Deployment targets ("kubernetes:NAMESPACE/WORKLOAD", "swarm:SERVICE",
"compose:PROJECT", "nitro_enclave:NAME"): allowed when a rule matching the identity lists a
matching `targets` glob. Deleting a registry: its creator, or a member of an owner group
whose `registries` match it. Everything else is denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from pullbroker_service.domain.errors import InvalidPolicy
from pullbroker_service.domain.globs import Glob, GlobError
from pullbroker_service.domain.identity import KNOWN_ROLES

_RULE_KEYS = ("identity", "roles", "registries", "repositories", "targets")
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
class Rule:
    """One rule of the policy file; `number` counts from 1 in file order."""

    number: int
    identity: Glob
    roles: frozenset[str]
    registries: tuple[Glob, ...]
    repositories: tuple[Glob, ...]
    targets: tuple[Glob, ...] = ()

    def describe(self) -> str:
        return f"rule {self.number} (identity {self.identity.pattern!r})"

    def grants_pull(self, registry: RegistryNames, repository: str) -> bool:
        names = _names(registry)
        return any(g.matches(n) for g in self.registries for n in names) and any(
            g.matches(repository) for g in self.repositories
        )


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

    def allows_pull(self, identity_name: str, registry: RegistryNames, repository: str) -> bool:
        return self.explain(identity_name, registry, repository).allowed

    def explain(self, identity_name: str, registry: RegistryNames, repository: str) -> Decision:
        """Which rule lets `identity_name` pull `repository` from `registry`, or why none does."""
        matching = self.matching(identity_name)
        for rule in matching:
            if rule.grants_pull(registry, repository):
                return Decision(True, rule, f"{rule.describe()} grants pull")
        if not matching:
            reason = f"no rule matches identity {identity_name!r}"
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
    identity_glob = _glob(identity, where, "identity")
    return Rule(number, identity_glob, roles, registries, repositories, targets)


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
