"""Policy decisions, table-driven: pulls (glob edge cases), deployment targets, owner groups."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from pullbroker_service.app.policy_source import PolicySource
from pullbroker_service.domain.errors import InvalidPolicy
from pullbroker_service.domain.policy import Policy

ADMIN = "spiffe://pullbroker.local/admin"
NODE = "spiffe://pullbroker.local/node/n1"
DEEP_NODE = "spiffe://pullbroker.local/node/rack1/n1"
OPS = "spiffe://pullbroker.local/ops/alice"

POLICY = Policy.from_mapping(
    {
        "rules": [
            {"identity": ADMIN, "roles": ["admin"], "targets": ["kubernetes:prod/*", "compose:**"]},
            {
                "identity": "spiffe://pullbroker.local/node/*",
                "roles": ["node"],
                "registries": ["team-*"],
                "repositories": ["team/*", "**/base"],
            },
            {
                "identity": "spiffe://pullbroker.local/node/n?",
                "registries": ["mirror"],
                "repositories": ["library/**"],
            },
            {
                "identity": "CN=legacy-*",
                "roles": ["node"],
                "registries": ["0190abc"],
                "repositories": ["app"],
            },
            {"identity": "spiffe://pullbroker.local/ops/*", "roles": ["admin"], "targets": ["**"]},
        ],
        "owner_groups": [
            {
                "name": "platform",
                "members": ["spiffe://pullbroker.local/ops/*"],
                "registries": ["team-*"],
            },
        ],
    }
)


@dataclass(frozen=True)
class Reg:
    """A registry as the policy sees it."""

    id: str
    display_name: str


TEAM = Reg("0190aaa", "team-ghcr")
MIRROR = Reg("0190bbb", "mirror")
BY_ID = Reg("0190abc", "renamed")
OTHER = Reg("0190ccc", "other")


class TestPulls:
    """A pull is allowed only when one matching rule lists both the registry and repository."""

    @pytest.mark.parametrize(
        ("identity", "registry", "repository", "allowed"),
        [
            (NODE, TEAM, "team/app", True),
            (NODE, TEAM, "team/a/b", False),  # "*" stays within one segment
            (NODE, TEAM, "team", False),  # "team/*" needs a segment after the slash
            (NODE, TEAM, "base", True),  # "**/base" matches at the top level too
            (NODE, TEAM, "x/y/base", True),  # ... and at any depth
            (NODE, TEAM, "x/y/base2", False),  # anchored at the end
            (NODE, TEAM, "Team/app", False),  # case-sensitive
            (NODE, OTHER, "team/app", False),  # registry not listed
            (DEEP_NODE, TEAM, "team/app", False),  # node/* does not cross "/" in identities
            (NODE, MIRROR, "library/nginx", True),  # rule 3: n? matches n1
            (NODE, MIRROR, "team/app", False),  # rule 2 lists team/* but not mirror: no mixing
            ("spiffe://pullbroker.local/node/n10", MIRROR, "library/x", False),  # ? is one char
            ("CN=legacy-box", BY_ID, "app", True),  # registries may be named by id
            ("CN=legacy-box", BY_ID, "app/sub", False),
            ("legacy-box", BY_ID, "app", False),  # a CN identity is spelled CN=...
            (ADMIN, TEAM, "team/app", False),  # admins manage, they do not pull
            ("spiffe://evil/node/n1", TEAM, "team/app", False),  # other trust domain
        ],
    )
    def test_decision(self, identity: str, registry: Reg, repository: str, allowed: bool) -> None:
        """Each case decides as the glob rules say, deny by default."""
        assert POLICY.explain(identity, registry, repository).allowed is allowed

    def test_reason_names_the_rule(self) -> None:
        """An allowed pull names the deciding rule; a denied one says what is missing."""
        allowed = POLICY.explain(NODE, TEAM, "team/app")
        assert allowed.rule is not None
        assert allowed.rule.number == 2
        denied = POLICY.explain("spiffe://nobody", TEAM, "team/app")
        assert "no rule matches identity" in denied.reason


class TestTargets:
    """Deployment targets are allowed only by a matching rule's `targets` globs."""

    @pytest.mark.parametrize(
        ("identity", "target", "allowed"),
        [
            (ADMIN, "kubernetes:prod/web", True),
            (ADMIN, "kubernetes:prod/web/extra", False),
            (ADMIN, "kubernetes:staging/web", False),
            (ADMIN, "compose:shop", True),
            (ADMIN, "swarm:api", False),
            (ADMIN, "nitro_enclave:signer", False),
            (OPS, "nitro_enclave:signer", True),
            (NODE, "compose:shop", False),  # no targets on the node rule
        ],
    )
    def test_decision(self, identity: str, target: str, allowed: bool) -> None:
        """Each target is decided by the identity's rules' `targets`."""
        assert POLICY.explain_target(identity, target).allowed is allowed

    def test_unknown_target_kind_is_refused_at_load(self) -> None:
        """A `targets` entry with an unknown kind is a policy error naming the rule."""
        with pytest.raises(InvalidPolicy, match=r"rule 1 .*'k8s:prod/\*'"):
            Policy.from_mapping({"rules": [{"identity": ADMIN, "targets": ["k8s:prod/*"]}]})


class TestOwnership:
    """A registry is deleted by its creator or by an owner group covering it."""

    @pytest.mark.parametrize(
        ("identity", "registry", "creator", "allowed"),
        [
            (ADMIN, TEAM, ADMIN, True),  # the creator
            (OPS, TEAM, ADMIN, True),  # owner group platform owns team-*
            (OPS, OTHER, ADMIN, False),  # ... but not other registries
            ("spiffe://pullbroker.local/admin2", TEAM, ADMIN, False),
            (ADMIN, TEAM, "", False),  # no recorded creator: only owner groups
        ],
    )
    def test_decision(self, identity: str, registry: Reg, creator: str, allowed: bool) -> None:
        """Deletion is allowed exactly to the creator and the owner groups."""
        assert POLICY.explain_delete(identity, registry, creator).allowed is allowed

    def test_refusal_names_who_may(self) -> None:
        """The refusal names the creator and the owner groups that could delete it."""
        reason = POLICY.explain_delete("spiffe://x/y", TEAM, ADMIN).reason
        assert ADMIN in reason
        assert "'platform'" in reason

    @pytest.mark.parametrize(
        ("groups", "fragment"),
        [
            ([{"name": "p", "members": ["*"]}], "must both list"),
            ([{"name": "p", "members": ["*"], "registries": ["*"], "x": 1}], "unknown key"),
            ([{"members": ["*"], "registries": ["*"]}], "'name' is required"),
            ("platform", "must be a list"),
        ],
    )
    def test_invalid_owner_groups(self, groups: object, fragment: str) -> None:
        """A malformed owner group is a policy error that says what to fix."""
        with pytest.raises(InvalidPolicy, match=fragment):
            Policy.from_mapping({"rules": [], "owner_groups": groups})

    def test_existing_policies_still_load(self) -> None:
        """A policy with only `rules` (the format before targets and owners) loads as before."""
        policy = Policy.from_mapping({"rules": [{"identity": ADMIN, "roles": ["admin"]}]})
        assert policy.owner_groups == ()
        assert policy.roles_for(ADMIN) == frozenset({"admin"})


class TestReload:
    """An edited policy file takes effect without a restart; a broken edit changes nothing."""

    def test_edit_takes_effect(self, tmp_path: Path) -> None:
        """Granting a target and an owner group in the file is seen on the next check."""
        path = tmp_path / "policy.yaml"
        path.write_text(f'rules:\n  - identity: "{ADMIN}"\n    roles: [admin]\n')
        now = [0.0]
        source = PolicySource(path, check_interval=1.0, clock=lambda: now[0])
        assert not source.current().explain_target(ADMIN, "swarm:api").allowed
        path.write_text(
            f'rules:\n  - identity: "{ADMIN}"\n    roles: [admin]\n    targets: ["swarm:*"]\n'
            f'owner_groups:\n  - name: ops\n    members: ["{OPS}"]\n    registries: ["*"]\n'
        )
        _touch_later(path)
        assert not source.current().explain_target(ADMIN, "swarm:api").allowed  # not yet due
        now[0] = 1.5
        assert source.current().explain_target(ADMIN, "swarm:api").allowed
        assert source.current().explain_delete(OPS, OTHER, ADMIN).allowed

    def test_broken_edit_keeps_the_last_good_policy(self, tmp_path: Path) -> None:
        """An edit that does not validate is ignored: the previous grants stay in force."""
        path = tmp_path / "policy.yaml"
        path.write_text(f'rules:\n  - identity: "{ADMIN}"\n    targets: ["**"]\n')
        now = [0.0]
        source = PolicySource(path, check_interval=1.0, clock=lambda: now[0])
        path.write_text(f'rules:\n  - identity: "{ADMIN}"\n    targets: ["k8s:*"]\n')
        _touch_later(path)
        now[0] = 2.0
        assert source.current().explain_target(ADMIN, "compose:shop").allowed


def _touch_later(path: Path) -> None:
    # A rewrite within the filesystem's timestamp granularity must still look changed.
    info = path.stat()
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
