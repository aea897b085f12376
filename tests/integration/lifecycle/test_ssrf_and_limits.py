"""Abuse limits at the API: the dial policy (SSRF) and per-identity rate limits."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, basic_credential
from pullbroker_client.secret import Secret
from pullbroker_service.app.ratelimit import Limit, LimitKind
from pullbroker_service.domain.hosts import DialPolicy

from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, StandardImages
from tests.harness.token_server import TokenServer
from tests.integration.lifecycle.conftest import LifecycleBroker
from tests.integration.lifecycle.node import add_registry

pytestmark = pytest.mark.integration

SLOW = 0.001  # per second: nothing refills during a test


class TestDialPolicy:
    """By default the broker dials no loopback, private, link-local or metadata address."""

    def test_default_policy_refuses_a_loopback_registry(
        self,
        make_lifecycle_broker: Callable[..., LifecycleBroker],
        token_registry: TokenAuthRegistry,
        token_server: TokenServer,
        pushed_images: StandardImages,
    ) -> None:
        """A tested create and a token for a stored loopback record are refused, undialled."""
        broker = make_lifecycle_broker(dial_policy=DialPolicy())
        registry = token_registry
        with broker.client() as admin, broker.client("node") as node:
            with pytest.raises(BrokerCallError) as tested:
                add_registry(admin, "team", registry, ALICE, test=True)
            add_registry(admin, "team", registry, ALICE)  # validation leaves loopback to dialing
            with pytest.raises(BrokerCallError) as issued:
                node.issue_pull_token(pushed_images.app.reference)
        for refused in (tested.value, issued.value):
            assert refused.code is grpc.StatusCode.INVALID_ARGUMENT
            assert "is a loopback address: refused" in refused.message
            assert "allow_loopback_registries" in refused.message
        assert token_server.requests == []

    def test_test_configuration_allows_loopback(
        self, lifecycle_broker: LifecycleBroker, token_registry: TokenAuthRegistry
    ) -> None:
        """The test configuration's broker dials the loopback registry."""
        with lifecycle_broker.client() as admin:
            created = add_registry(admin, "team", token_registry, ALICE, test=True)
        assert created.display_name == "team"

    @pytest.mark.parametrize(
        ("url", "fragment"),
        [
            ("https://169.254.169.254", "metadata service address"),
            ("https://[fd00:ec2::254]", "metadata service address"),
            ("https://[fe80::1]:5000", "link-local"),
        ],
    )
    def test_never_dialled_addresses_are_not_stored(
        self, lifecycle_broker: LifecycleBroker, url: str, fragment: str
    ) -> None:
        """Metadata and link-local URLs fail validation, whatever the dial policy."""
        record = registry_pb2.Registry(
            display_name="meta", type=registry_pb2.REGISTRY_TYPE_GENERIC, url=url
        )
        with lifecycle_broker.client() as admin, pytest.raises(BrokerCallError) as refused:
            admin.create_registry(record, basic_credential("u", Secret("p-123456")))
        assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert fragment in refused.value.message


class TestRateLimits:
    """Over its limit an identity gets RESOURCE_EXHAUSTED with a retry delay; others do not."""

    def test_token_limit_per_identity(
        self,
        make_lifecycle_broker: Callable[..., LifecycleBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """The third token in a burst of two is refused; another node is still served."""
        limits = {LimitKind.ISSUE_PULL_TOKEN: Limit(per_second=SLOW, burst=2)}
        broker = make_lifecycle_broker(limits=limits)
        other = broker.issue_cert("node-b", "spiffe://pullbroker.local/node/b")
        with broker.client() as admin:
            add_registry(admin, "team", token_registry, ALICE)
        with broker.client("node") as node:
            for _ in range(2):
                node.issue_pull_token(pushed_images.app.reference)
            with pytest.raises(BrokerCallError) as limited:
                node.issue_pull_token(pushed_images.app.reference)
        assert limited.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert limited.value.retry_after is not None
        assert limited.value.retry_after > 1
        with broker.client(tls=other) as node_b:
            node_b.issue_pull_token(pushed_images.app.reference)
        denied = [e for e in broker.audit_events() if e["outcome"] == "denied"]
        assert [(e["action"], e["repository"]) for e in denied] == [("token.issue", "team/app")]

    def test_test_connection_limit(
        self,
        make_lifecycle_broker: Callable[..., LifecycleBroker],
        token_registry: TokenAuthRegistry,
    ) -> None:
        """A second TestConnection within the limit's window is refused before any dialing."""
        broker = make_lifecycle_broker(limits={LimitKind.TEST_CONNECTION: Limit(SLOW, 1)})
        with broker.client() as admin:
            add_registry(admin, "team", token_registry, ALICE)
            admin.test_connection(name="team")
            with pytest.raises(BrokerCallError) as limited:
                admin.test_connection(name="team")
        assert limited.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "TestConnection" in limited.value.message
