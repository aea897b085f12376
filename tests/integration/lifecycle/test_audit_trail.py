"""After a scripted sequence the audit log holds exactly the expected events, and no secret."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, basic_credential
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_tree, new_canary
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, seed_image
from tests.integration.lifecycle.conftest import LIFECYCLE_POLICY, LifecycleBroker
from tests.integration.lifecycle.node import add_registry, deploy_on_node, deployment

pytestmark = pytest.mark.integration

ADMIN = "spiffe://pullbroker.local/admin"
ADMIN2 = "spiffe://pullbroker.local/admin2"
NODE_PREFIX = "spiffe://pullbroker.local/node/"
# Nodes may pull team/app only, so a request for team/other is a policy denial.
POLICY = LIFECYCLE_POLICY.replace('repositories: ["**"]', 'repositories: ["team/app"]')


class TestAuditTrail:
    """Every credential operation and token is one event; refusals say why; nothing secret."""

    async def test_scripted_sequence(
        self,
        make_lifecycle_broker: Callable[..., LifecycleBroker],
        make_token_registry: Callable[..., TokenAuthRegistry],
    ) -> None:
        """The exact events, in order, with identities, registries, scopes and the digest."""
        broker = make_lifecycle_broker(policy=POLICY)
        registry = make_token_registry()
        image = seed_image(registry, broker.home.root.parent / "seed", "team/app", "v1", [512])
        other = f"{registry.host}/team/other:v1"
        old_password, new_password = registry.users[ALICE], new_canary("audit-rotated")
        admin2 = broker.issue_cert("admin2", ADMIN2)
        tokens: list[str] = []

        with broker.client() as admin, broker.client("node") as node:
            team = add_registry(admin, "team", registry, ALICE)  # 1 registry.create
            tokens.append(node.issue_pull_token(image.reference).token.reveal())  # 2 token
            with broker.client(tls=admin2) as intruder, pytest.raises(BrokerCallError):
                intruder.delete_registry("team")  # 3 registry.delete denied (not owner)
            admin.create_deployment("web", deployment(image.reference, "team"))  # 4
        await deploy_on_node(broker.target("node"), "web", image.reference)  # 5, 6, 7
        with broker.client() as admin, broker.client("node") as node:
            admin.test_connection(name="team", repository="team/app")  # 8 connection.test
            registry.set_password(ALICE, new_password)
            current = admin.get_registry("team")
            admin.update_registry(  # 9 credential.rotate
                registry_pb2.Registry(name=current.name, etag=current.etag),
                (),
                basic_credential(ALICE, Secret(new_password)),
            )
            tokens.append(node.issue_pull_token(image.reference).token.reveal())  # 10
            with pytest.raises(BrokerCallError):
                node.issue_pull_token(other)  # 11 token denied by policy
            with pytest.raises(BrokerCallError):
                admin.delete_registry("team")  # 12 registry.delete denied (in use)
            admin.terminate_deployment("web")  # 13
            admin.delete_registry("team")  # 14

        events = broker.audit_events()
        reg, dig = team.name, image.digest
        scope = "repository:team/app:pull"
        assert [_shape(e) for e in events] == [
            ("registry.create", "allowed", ADMIN, "admin", reg, "", "", "", ""),
            ("token.issue", "allowed", NODE_PREFIX, "node", reg, "team/app", scope, "", ""),
            ("registry.delete", "denied", ADMIN2, "admin", "team", "", "", "", ""),
            ("deployment.create", "allowed", ADMIN, "admin", reg, "team/app", "", "web", ""),
            ("deployment.report", "allowed", NODE_PREFIX, "node", reg, "team/app", "", "web", ""),
            ("token.issue", "allowed", NODE_PREFIX, "node", reg, "team/app", scope, "", ""),
            ("deployment.report", "allowed", NODE_PREFIX, "node", reg, "team/app", "", "web", dig),
            ("connection.test", "allowed", ADMIN, "admin", "team", "team/app", "", "", ""),
            ("credential.rotate", "allowed", ADMIN, "admin", reg, "", "", "", ""),
            ("token.issue", "allowed", NODE_PREFIX, "node", reg, "team/app", scope, "", ""),
            ("token.issue", "denied", NODE_PREFIX, "node", "", "team/other", "", "", ""),
            ("registry.delete", "denied", ADMIN, "admin", "team", "", "", "", ""),
            ("deployment.terminate", "allowed", ADMIN, "admin", reg, "team/app", "", "web", dig),
            ("registry.delete", "allowed", ADMIN, "admin", reg, "", "", "", ""),
        ]  # fmt: skip
        assert "only its creator" in events[2]["reason"]
        assert "may not pull team/other" in events[10]["reason"]
        assert "still used by deployment(s) web" in events[11]["reason"]
        assert all(e["request_id"] and e["time"].endswith("+00:00") for e in events)
        for secret in (old_password, new_password, *tokens):
            assert find_in_tree(broker.audit_path.parent, secret) == []


def _shape(event: dict[str, str]) -> tuple[str, ...]:
    identity = event["identity"]
    if identity.startswith(NODE_PREFIX):
        identity = NODE_PREFIX
    return (
        event["action"],
        event["outcome"],
        identity,
        event["role"],
        event["registry"],
        event["repository"],
        event["scope"],
        event["deployment"].removeprefix("deployments/"),
        event["digest"],
    )


class TestRefusedBeforeAnyToken:
    """IssuePullToken calls refused before a use case runs are audited too."""

    @pytest.mark.parametrize("image", ["", "a.io/" + "x" * 5000], ids=["empty", "too-long"])
    def test_bad_image_is_audited(
        self, make_lifecycle_broker: Callable[..., LifecycleBroker], image: str
    ) -> None:
        """An empty or over-long image: INVALID_ARGUMENT, and a FAILED token.issue event."""
        broker = make_lifecycle_broker(policy=POLICY)
        with broker.client("node") as node, pytest.raises(BrokerCallError) as caught:
            node.issue_pull_token(image)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        events = [e for e in broker.audit_events() if e["action"] == "token.issue"]
        assert [e["outcome"] for e in events] == ["failed"]
        assert events[0]["identity"].startswith(NODE_PREFIX)

    def test_caller_without_the_node_role_is_audited(
        self, make_lifecycle_broker: Callable[..., LifecycleBroker]
    ) -> None:
        """An admin certificate asking for a token: PERMISSION_DENIED, and a DENIED event."""
        broker = make_lifecycle_broker(policy=POLICY)
        with broker.client() as admin, pytest.raises(BrokerCallError) as caught:
            admin.issue_pull_token("a.io/team/app:v1")
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        events = [e for e in broker.audit_events() if e["action"] == "token.issue"]
        assert [(e["outcome"], e["identity"]) for e in events] == [("denied", ADMIN)]
