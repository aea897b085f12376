"""IssuePullToken end to end: the broker mints from the real token registry; the token pulls."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import (
    BrokerCallError,
    BrokerClient,
    IssuedPullToken,
    basic_credential,
)
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_text, find_in_tree
from tests.harness.images import OCI_INDEX, OCI_MANIFEST
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.integration.conftest import RunningBroker

pytestmark = pytest.mark.integration

ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST])


def add_registry(client: BrokerClient, name: str, reg: TokenAuthRegistry, user: str) -> Any:
    record = registry_pb2.Registry(
        display_name=name,
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=reg.url,
        registry_ca_pem=reg.ca_pem,
    )
    return client.create_registry(record, basic_credential(user, Secret(reg.users[user])))


def get_manifest(reg: TokenAuthRegistry, token: IssuedPullToken, repository: str, tag: str) -> int:
    """HTTP status of GET manifest with the issued token (trust only the registry's CA)."""
    header = token.authorization()
    headers = {"Accept": ACCEPT, **({"Authorization": header.reveal()} if header else {})}
    with httpx.Client(verify=reg.ssl_context(), trust_env=False, timeout=10) as http:
        url = f"{reg.url}/v2/{repository}/manifests/{tag}"
        return http.get(url, headers=headers).status_code


def try_issue(client: BrokerClient, image: str) -> IssuedPullToken | BrokerCallError:
    """The token, or the error the broker refused with (either may be right for a refusal)."""
    try:
        return client.issue_pull_token(image)
    except BrokerCallError as exc:
        return exc


class TestIssuePullToken:
    def test_token_pulls_the_manifest(
        self,
        broker: RunningBroker,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A node gets a bearer token scoped to team/app:pull that fetches team/app's manifest."""
        created = add_registry(admin_client, "team", token_registry, ALICE)
        token = node_client.issue_pull_token(pushed_images.app.reference)
        assert token.registry == created.name
        assert token.registry_host == token_registry.host
        assert token.auth_kind == "bearer"
        assert token.scope == "repository:team/app:pull"
        assert token.repository == "team/app"
        assert token.registry_ca_pem == token_registry.ca_pem
        assert token.expires_at > dt.datetime.now(dt.UTC)
        assert get_manifest(token_registry, token, "team/app", "v1") == 200
        assert find_in_tree(broker.home.root, token.token.reveal()) == []
        assert not find_in_text(broker.home.broker_log.read_text(), token.token.reveal())

    def test_token_by_digest_and_named_registry(
        self,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A digest reference with an explicit registry name gets a working token."""
        add_registry(admin_client, "team-digest", token_registry, ALICE)
        token = node_client.issue_pull_token(
            pushed_images.app.digest_reference, registry="team-digest"
        )
        assert get_manifest(token_registry, token, "team/app", pushed_images.app.digest) == 200

    def test_bob_cannot_get_team_other(
        self,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """Bob's record may pull team/app but not team/other: the registry refuses that."""
        add_registry(admin_client, "bob", token_registry, BOB)
        allowed = node_client.issue_pull_token(pushed_images.app.reference)
        assert get_manifest(token_registry, allowed, "team/app", "v1") == 200
        outcome = try_issue(node_client, pushed_images.other.reference)
        if isinstance(outcome, BrokerCallError):
            assert outcome.code is grpc.StatusCode.PERMISSION_DENIED
        else:
            assert get_manifest(token_registry, outcome, "team/other", "v1") in (401, 403)

    def test_node_outside_policy_is_denied(
        self,
        make_broker: Callable[..., RunningBroker],
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A node whose policy rule does not list the registry is PERMISSION_DENIED."""
        policy = (
            "rules:\n"
            '  - identity: "spiffe://pullbroker.local/admin"\n'
            "    roles: [admin]\n"
            '  - identity: "spiffe://pullbroker.local/node/*"\n'
            "    roles: [node]\n"
            '    registries: ["some-other-registry"]\n'
            '    repositories: ["**"]\n'
        )
        broker = make_broker(policy=policy)
        with broker.client("admin") as admin, broker.client("node") as node:
            add_registry(admin, "team", token_registry, ALICE)
            with pytest.raises(BrokerCallError) as caught:
                node.issue_pull_token(pushed_images.app.reference)
        assert caught.value.code is grpc.StatusCode.PERMISSION_DENIED
        assert "team/app" in caught.value.message

    def test_cached_token_is_reused_and_force_refresh_mints(
        self,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A second request reuses the cached token; force_refresh gets a new one that works."""
        add_registry(admin_client, "cache", token_registry, ALICE)
        first = node_client.issue_pull_token(pushed_images.app.reference)
        again = node_client.issue_pull_token(pushed_images.app.reference)
        fresh = node_client.issue_pull_token(pushed_images.app.reference, force_refresh=True)
        assert again.token == first.token
        assert fresh.token != first.token
        assert get_manifest(token_registry, fresh, "team/app", "v1") == 200


class TestBadPullInput:
    def test_malformed_reference_is_invalid(
        self, admin_client: BrokerClient, node_client: BrokerClient
    ) -> None:
        """A reference that does not parse is INVALID_ARGUMENT quoting the problem."""
        with pytest.raises(BrokerCallError) as caught:
            node_client.issue_pull_token("UPPER/Case::bad@@ref")
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.message

    def test_empty_image_is_invalid(self, node_client: BrokerClient) -> None:
        """An empty image is INVALID_ARGUMENT with an example of a good one."""
        with pytest.raises(BrokerCallError) as caught:
            node_client.issue_pull_token("")
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "image is required" in caught.value.message

    def test_image_host_must_match_registry_host(
        self,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
    ) -> None:
        """Naming a registry whose host differs from the image's is INVALID_ARGUMENT."""
        add_registry(admin_client, "team", token_registry, ALICE)
        with pytest.raises(BrokerCallError) as caught:
            node_client.issue_pull_token("ghcr.io/acme/app:1", registry="team")
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "ghcr.io" in caught.value.message

    def test_unknown_host_is_not_found(self, node_client: BrokerClient) -> None:
        """An image on a host no registry serves is NOT_FOUND, saying how to add one."""
        with pytest.raises(BrokerCallError) as caught:
            node_client.issue_pull_token("registry.example.com/team/app:v1")
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert "registry add" in caught.value.message
