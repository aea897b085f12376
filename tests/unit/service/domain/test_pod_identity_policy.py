"""Policy rules scoped to Kubernetes pods: `kubernetes: {namespaces, service_accounts}`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from pullbroker_service.app.policy_memo import PolicyMemo
from pullbroker_service.app.policy_source import StaticPolicy
from pullbroker_service.domain.errors import InvalidPolicy
from pullbroker_service.domain.pod_identity import PodIdentity
from pullbroker_service.domain.policy import Policy

NODE = "spiffe://pullbroker.local/node/n1"
ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Reg:
    """A registry as the policy sees it."""

    id: str
    display_name: str


PAYMENTS = Reg("0190pay", "payments")
SHARED = Reg("0190shr", "shared")


def pod(namespace: str, account: str, name: str = "web-0") -> PodIdentity:
    return PodIdentity(ISSUER, namespace, account, pod_name=name)


def rule(**extra: Any) -> dict[str, Any]:
    return {"identity": "spiffe://pullbroker.local/node/*", **extra}


POLICY = Policy.from_mapping(
    {
        "rules": [
            rule(
                roles=["node"],
                registries=["payments"],
                repositories=["payments/**"],
                kubernetes={"namespaces": ["payments", "payments-*"]},
            ),
            rule(
                registries=["payments"],
                repositories=["payments/tools"],
                kubernetes={"service_accounts": ["ci/builder", "*/auditor"]},
            ),
            rule(
                registries=["shared"],
                repositories=["secure/*"],
                kubernetes={"namespaces": ["prod-*"], "service_accounts": ["*/deployer"]},
            ),
            rule(registries=["shared"], repositories=["base/*"]),
        ]
    }
)


class TestScopedRules:
    @pytest.mark.parametrize(
        ("who", "registry", "repository", "allowed"),
        [
            (pod("payments", "default"), PAYMENTS, "payments/api", True),
            (pod("payments-eu", "web"), PAYMENTS, "payments/a/b", True),
            (pod("shop", "default"), PAYMENTS, "payments/api", False),
            (pod("ci", "builder"), PAYMENTS, "payments/tools", True),
            (pod("ci", "builder"), PAYMENTS, "payments/api", False),
            (pod("anything", "auditor"), PAYMENTS, "payments/tools", True),
            (pod("ci", "runner"), PAYMENTS, "payments/tools", False),
            (pod("prod-eu", "deployer"), SHARED, "secure/app", True),
            (pod("prod-eu", "web"), SHARED, "secure/app", False),
            (pod("staging", "deployer"), SHARED, "secure/app", False),
            (None, PAYMENTS, "payments/api", False),
        ],
    )
    def test_decisions(
        self, who: PodIdentity | None, registry: Reg, repository: str, allowed: bool
    ) -> None:
        """Namespaces and "NAMESPACE/NAME" globs decide; both lists must match when given."""
        assert POLICY.allows_pull(NODE, registry, repository, who) is allowed

    def test_unscoped_rules_behave_as_before(self) -> None:
        """A rule without `kubernetes` grants with or without a pod, whoever the pod is."""
        for who in (None, pod("payments", "default"), pod("anyone", "x")):
            assert POLICY.explain(NODE, SHARED, "base/alpine", who).allowed

    def test_a_later_unscoped_rule_still_grants(self) -> None:
        """A scoped rule that refuses the pod does not stop a later plain rule from granting."""
        policy = Policy.from_mapping(
            {
                "rules": [
                    rule(
                        registries=["*"],
                        repositories=["**"],
                        kubernetes={"namespaces": ["payments"]},
                    ),
                    rule(registries=["shared"], repositories=["base/*"]),
                ]
            }
        )
        decision = policy.explain(NODE, SHARED, "base/alpine", pod("shop", "default"))
        assert decision.allowed
        assert decision.rule is not None
        assert decision.rule.number == 2


class TestExplain:
    def test_allow_names_rule_and_account(self) -> None:
        """An allow by a scoped rule names the rule and the pod's service account."""
        decision = POLICY.explain(NODE, PAYMENTS, "payments/api", pod("payments", "web"))
        assert decision.rule is not None
        assert decision.rule.number == 1
        assert decision.reason == (
            "rule 1 (identity 'spiffe://pullbroker.local/node/*') grants pull to "
            "service account payments/web"
        )

    def test_deny_for_another_pod_says_which_pods_may(self) -> None:
        """Denied for a pod outside the scope: the reason lists the scope and the account."""
        decision = POLICY.explain(NODE, SHARED, "secure/app", pod("prod-eu", "web"))
        assert not decision.allowed
        assert "only for Kubernetes pods with namespaces ['prod-*'] and service accounts " in (
            decision.reason
        )
        assert decision.reason.endswith("not for service account prod-eu/web")

    def test_deny_without_a_token_says_how_to_send_one(self) -> None:
        """Denied because no pod identity came: the reason points at tokenAttributes."""
        decision = POLICY.explain(NODE, PAYMENTS, "payments/api")
        assert not decision.allowed
        assert "carried no service-account token" in decision.reason
        assert "tokenAttributes" in decision.reason

    def test_unlisted_repository_reason_is_unchanged(self) -> None:
        """A repository no rule lists gets the usual reason, pod or not."""
        decision = POLICY.explain(NODE, PAYMENTS, "other/app", pod("payments", "web"))
        assert "lists registry 'payments' together with repository 'other/app'" in (decision.reason)


class TestParsing:
    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            ({"kubernetes": {"namespaces": ["a"]}}, "give it with 'registries'"),
            ({**{"registries": ["*"], "repositories": ["**"]}, "kubernetes": ["a"]}, "mapping"),
            ({"registries": ["*"], "repositories": ["**"], "kubernetes": {}}, "namespaces, "),
            (
                {"registries": ["*"], "repositories": ["**"], "kubernetes": {"pods": ["x"]}},
                "unknown key(s) ['pods']",
            ),
            (
                {
                    "registries": ["*"],
                    "repositories": ["**"],
                    "kubernetes": {"service_accounts": ["puller"]},
                },
                "must be NAMESPACE/NAME",
            ),
            (
                {
                    "registries": ["*"],
                    "repositories": ["**"],
                    "kubernetes": {"service_accounts": ["a/b/c"]},
                },
                "must be NAMESPACE/NAME",
            ),
            (
                {
                    "registries": ["*"],
                    "repositories": ["**"],
                    "kubernetes": {"namespaces": ["a/b"]},
                },
                "has no '/'",
            ),
            (
                {
                    "registries": ["*"],
                    "repositories": ["**"],
                    "kubernetes": {"namespaces": "payments"},
                },
                "must be a list",
            ),
        ],
    )
    def test_invalid_kubernetes_keys(self, extra: dict[str, Any], message: str) -> None:
        """A malformed `kubernetes` key is refused, naming the rule and what to write."""
        with pytest.raises(InvalidPolicy) as caught:
            Policy.from_mapping({"rules": [rule(**extra)]})
        assert "rule 1" in str(caught.value)
        assert message in str(caught.value)

    def test_roles_ignore_the_kubernetes_key(self) -> None:
        """Roles come from the certificate identity alone, as before."""
        assert POLICY.roles_for(NODE) == frozenset({"node"})


class TestMemo:
    def test_memo_keeps_service_accounts_apart(self) -> None:
        """Remembered decisions are per service account: one pod's allow is not another's."""
        memo = PolicyMemo(StaticPolicy(POLICY))
        assert memo.explain(NODE, PAYMENTS, "payments/api", pod("payments", "web")).allowed
        assert not memo.explain(NODE, PAYMENTS, "payments/api", pod("shop", "web")).allowed
        assert not memo.explain(NODE, PAYMENTS, "payments/api").allowed
        assert memo.explain(NODE, PAYMENTS, "payments/api", pod("payments", "web")).allowed

    def test_pods_of_one_account_share_a_decision(self) -> None:
        """Another pod of the same account reuses the remembered decision object."""
        memo = PolicyMemo(StaticPolicy(POLICY))
        first = memo.explain(NODE, PAYMENTS, "payments/api", pod("payments", "web", "web-0"))
        second = memo.explain(NODE, PAYMENTS, "payments/api", pod("payments", "web", "web-1"))
        assert second is first

    def test_issuer_is_part_of_the_key(self) -> None:
        """The same namespace/account from another issuer is decided separately."""
        memo = PolicyMemo(StaticPolicy(POLICY))
        here = memo.explain(NODE, PAYMENTS, "payments/api", pod("payments", "web"))
        other = PodIdentity("https://other.example", "payments", "web")
        assert memo.explain(NODE, PAYMENTS, "payments/api", other) is not here
