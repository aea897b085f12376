"""The policy: globs, roles, pull decisions, validation messages, and reloading policy.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from pullbroker_service.app.policy_source import (
    DEV_DEFAULT_POLICY,
    PolicySource,
    load_policy_file,
    write_default_policy,
)
from pullbroker_service.domain.errors import InvalidPolicy
from pullbroker_service.domain.globs import Glob, GlobError
from pullbroker_service.domain.policy import Policy

NODE = "spiffe://pullbroker.local/node/n1"
ADMIN = "spiffe://pullbroker.local/admin"


@dataclass(frozen=True)
class Reg:
    id: str
    display_name: str


ACME = Reg("0190abc", "acme")
OTHER = Reg("0190def", "other")


class TestGlobs:
    """`*` and `?` stay in one segment, `**` crosses segments, everything else is literal."""

    @pytest.mark.parametrize(
        ("pattern", "text", "matches"),
        [
            ("team/*", "team/app", True),
            ("team/*", "team/a/b", False),
            ("team/*", "team/", True),
            ("team/*", "team", False),
            ("team/**", "team/a/b/c", True),
            ("team/**", "team/app", True),
            ("**/app", "app", True),
            ("**/app", "x/y/app", True),
            ("**/app", "x/app2", False),
            ("**", "anything/at/all", True),
            ("*", "a/b", False),
            ("team/a?p", "team/app", True),
            ("team/a?p", "team/a/p", False),
            ("spiffe://pullbroker.local/node/*", NODE, True),
            ("spiffe://pullbroker.local/node/*", NODE + "/x", False),
            ("CN=node-*", "CN=node-7", True),
            ("team.app", "teamXapp", False),
            ("Team/*", "team/app", False),
        ],
    )
    def test_matching(self, pattern: str, text: str, matches: bool) -> None:
        """Each pattern matches exactly what the dialect promises."""
        assert Glob(pattern).matches(text) is matches

    @pytest.mark.parametrize("pattern", ["", "node-[0-9]"])
    def test_refused_patterns(self, pattern: str) -> None:
        """Empty patterns and character classes are refused instead of guessed at."""
        with pytest.raises(GlobError):
            Glob(pattern)


POLICY = {
    "rules": [
        {"identity": ADMIN, "roles": ["admin"]},
        {
            "identity": "spiffe://pullbroker.local/node/*",
            "roles": ["node"],
            "registries": ["acme"],
            "repositories": ["team/*"],
        },
        {
            "identity": "spiffe://pullbroker.local/node/*",
            "roles": ["admin"],
            "registries": ["0190def"],
            "repositories": ["public/**"],
        },
    ]
}


class TestDecisions:
    """Roles: first granting rule wins. Pulls: some matching rule lists registry and repository."""

    def test_roles(self) -> None:
        """The first rule that grants roles decides them; unknown identities get none."""
        policy = Policy.from_mapping(POLICY)
        assert policy.roles_for(ADMIN) == {"admin"}
        assert policy.roles_for(NODE) == {"node"}
        assert policy.roles_for("CN=stranger") == frozenset()

    @pytest.mark.parametrize(
        ("identity", "registry", "repository", "allowed", "rule"),
        [
            (NODE, ACME, "team/app", True, 2),
            (NODE, ACME, "team/a/b", False, None),
            (NODE, ACME, "public/x", False, None),  # rule 3's repos do not combine with rule 2's
            (NODE, OTHER, "public/x/y", True, 3),  # matched by id
            (NODE, OTHER, "team/app", False, None),
            (ADMIN, ACME, "team/app", False, None),  # admin role grants no pulls
            ("CN=stranger", ACME, "team/app", False, None),
        ],
    )
    def test_pulls(
        self, identity: str, registry: Reg, repository: str, allowed: bool, rule: int | None
    ) -> None:
        """allows_pull and explain agree, and explain names the deciding rule."""
        policy = Policy.from_mapping(POLICY)
        decision = policy.explain(identity, registry, repository)
        assert policy.allows_pull(identity, registry, repository) is allowed
        assert decision.allowed is allowed
        assert (decision.rule.number if decision.rule else None) == rule

    def test_denial_reason_names_the_identity(self) -> None:
        """A denial says which identity matched no rule."""
        decision = Policy.from_mapping(POLICY).explain("CN=stranger", ACME, "team/app")
        assert "no rule matches identity 'CN=stranger'" in decision.reason

    def test_empty_policy_denies_everything(self) -> None:
        """Deny by default: no rules, no roles, no pulls."""
        policy = Policy.from_mapping({"rules": []})
        assert policy.roles_for(ADMIN) == frozenset()
        assert not policy.allows_pull(NODE, ACME, "team/app")


class TestValidation:
    """Invalid policies are refused with a message naming the rule and key."""

    @pytest.mark.parametrize(
        ("data", "fragment"),
        [
            (None, "must be a mapping"),
            ({}, "needs a 'rules' list"),
            ({"rules": [], "extra": 1}, "unknown top-level key"),
            ({"rules": ["x"]}, "rule 1: must be a mapping"),
            ({"rules": [{"roles": ["admin"]}]}, "rule 1: 'identity' is required"),
            (
                {"rules": [{"identity": "a", "role": ["admin"]}]},
                "rule 1 (identity 'a'): unknown key",
            ),
            ({"rules": [{"identity": "a", "roles": ["root"]}]}, "unknown role(s) ['root']"),
            ({"rules": [{"identity": "a", "roles": "admin"}]}, "'roles' must be a list"),
            (
                {"rules": [{"identity": "a"}, {"identity": "b", "registries": ["*"]}]},
                "rule 2 (identity 'b'): 'registries' and 'repositories' go together",
            ),
            ({"rules": [{"identity": "a[0]"}]}, "character classes"),
        ],
    )
    def test_messages(self, data: object, fragment: str) -> None:
        """Each mistake produces a message that points at it."""
        with pytest.raises(InvalidPolicy) as info:
            Policy.from_mapping(data)
        assert fragment in str(info.value)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rewrite(path: Path, text: str) -> None:
    """Replace the file through a new inode, as editors and ConfigMap updates do."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


ONLY_ADMIN = 'rules:\n  - identity: "spiffe://pullbroker.local/admin"\n    roles: [admin]\n'


class TestPolicySource:
    """policy.yaml is reloaded when it changes, at most once per interval; bad edits are ignored."""

    def test_default_policy_is_valid_and_not_overwritten(self, tmp_path: Path) -> None:
        """The dev default parses, grants nodes pulls, and an existing file is left alone."""
        path = tmp_path / "policy.yaml"
        assert write_default_policy(path)
        policy = load_policy_file(path)
        assert policy.allows_pull(NODE, ACME, "team/a/b")
        path.write_text(ONLY_ADMIN)
        assert not write_default_policy(path)
        assert path.read_text() == ONLY_ADMIN

    def test_reload_after_change(self, tmp_path: Path) -> None:
        """A changed file is picked up on the first check after the interval."""
        path = tmp_path / "policy.yaml"
        path.write_text(DEV_DEFAULT_POLICY)
        clock = FakeClock()
        source = PolicySource(path, clock=clock)
        assert source.current().allows_pull(NODE, ACME, "team/app")
        rewrite(path, ONLY_ADMIN)
        clock.now += 0.5
        assert source.current().allows_pull(NODE, ACME, "team/app"), "checked too early"
        clock.now += 0.6
        assert not source.current().allows_pull(NODE, ACME, "team/app")

    def test_bad_edit_keeps_last_good_policy(self, tmp_path: Path) -> None:
        """An invalid edit is logged and the previous policy stays in force."""
        path = tmp_path / "policy.yaml"
        path.write_text(DEV_DEFAULT_POLICY)
        clock = FakeClock()
        source = PolicySource(path, clock=clock)
        rewrite(path, "rules:\n  - identity: x\n    roles: [root]\n")
        clock.now += 2
        with structlog.testing.capture_logs() as logs:
            policy = source.current()
        assert policy.allows_pull(NODE, ACME, "team/app")
        assert [e["event"] for e in logs] == ["policy_reload_failed"]
        rewrite(path, ONLY_ADMIN)
        clock.now += 2
        assert source.current().roles_for(NODE) == frozenset()

    def test_deleted_file_keeps_last_good_policy(self, tmp_path: Path) -> None:
        """A vanished file does not open or close the broker: the last policy stays."""
        path = tmp_path / "policy.yaml"
        path.write_text(DEV_DEFAULT_POLICY)
        clock = FakeClock()
        source = PolicySource(path, clock=clock)
        path.unlink()
        clock.now += 2
        assert source.current().roles_for(ADMIN) == {"admin"}

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [("rules: [", "not valid YAML at line"), ("rules:\n  - identity: 5\n", "rule 1")],
    )
    def test_first_load_must_succeed(self, tmp_path: Path, text: str, fragment: str) -> None:
        """A broker does not start on a broken policy, and the error names the file."""
        path = tmp_path / "policy.yaml"
        path.write_text(text)
        with pytest.raises(InvalidPolicy) as info:
            PolicySource(path)
        assert str(path) in str(info.value)
        assert fragment in str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing policy file is an InvalidPolicy naming the path."""
        with pytest.raises(InvalidPolicy, match="cannot read policy file"):
            PolicySource(tmp_path / "absent.yaml")
