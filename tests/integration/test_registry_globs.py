"""Several records for one host, told apart by repository globs, through a real broker and the
real token registry; and ListPullableRegistries for a node."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import BrokerCallError, BrokerClient, basic_credential
from pullbroker_client.secret import Secret

from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.integration.test_api_pull import get_manifest

pytestmark = pytest.mark.integration


def add(client: BrokerClient, name: str, reg: TokenAuthRegistry, user: str, *globs: str) -> Any:
    record = registry_pb2.Registry(
        display_name=name,
        type=registry_pb2.REGISTRY_TYPE_GENERIC,
        url=reg.url,
        registry_ca_pem=reg.ca_pem,
        repositories=list(globs),
    )
    return client.create_registry(record, basic_credential(user, Secret(reg.users[user])))


class TestSeveralRecordsPerHost:
    def test_node_pull_gets_the_matching_credential(
        self,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """bob's record (team/app) and alice's (team/*) on one host: a pull naming no record
        gets bob's token for team/app (the more specific glob) and alice's for team/other;
        each token fetches its manifest."""
        teams = add(admin_client, "alice-team", token_registry, ALICE, "team/*")
        app = add(admin_client, "bob-app", token_registry, BOB, "team/app")
        assert list(admin_client.get_registry(app.name).repositories) == ["team/app"]
        token = node_client.issue_pull_token(pushed_images.app.reference)
        assert (token.registry, token.username or BOB) == (app.name, BOB)
        assert get_manifest(token_registry, token, "team/app", "v1") == 200
        other = node_client.issue_pull_token(pushed_images.other.reference)
        assert other.registry == teams.name
        assert get_manifest(token_registry, other, "team/other", "v1") == 200

    def test_overlapping_record_refused_with_the_fix(
        self, admin_client: BrokerClient, token_registry: TokenAuthRegistry
    ) -> None:
        """A third record tying with one for some repository is refused at create time,
        naming the record and --repositories; without globs beside a glob-less one too."""
        add(admin_client, "team-a", token_registry, ALICE, "team/a*")
        with pytest.raises(BrokerCallError) as raised:
            add(admin_client, "team-b", token_registry, ALICE, "team/*p")
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "'team-a'" in raised.value.message
        assert "--repositories" in raised.value.message
        add(admin_client, "everything", token_registry, ALICE)
        with pytest.raises(BrokerCallError, match="neither has repository globs"):
            add(admin_client, "everything-too", token_registry, BOB)
        names = [r.display_name for r in admin_client.iter_registries()]
        assert sorted(names) == ["everything", "team-a"]


class TestListPullableRegistries:
    def test_node_sees_hosts_and_globs_without_secrets(
        self,
        admin_client: BrokerClient,
        node_client: BrokerClient,
        token_registry: TokenAuthRegistry,
    ) -> None:
        """Every record the node's policy allows, with its host, url and globs; the answer
        holds no password."""
        add(admin_client, "alice-team", token_registry, ALICE, "team/*")
        add(admin_client, "bob-app", token_registry, BOB, "team/app")
        answer = node_client.list_pullable_registries()
        by_name = {r.registry: r for r in answer.registries}
        assert len(by_name) == 2
        for entry in answer.registries:
            assert (entry.host, entry.url) == (token_registry.host, token_registry.url)
            assert entry.registry_ca_pem == token_registry.ca_pem
        assert sorted(list(r.repositories) for r in answer.registries) == [
            ["team/*"],
            ["team/app"],
        ]
        text = str(answer)
        assert all(password not in text for password in token_registry.users.values())

    def test_admin_is_refused(self, admin_client: BrokerClient) -> None:
        """The RPC is PullService's: role node only."""
        with pytest.raises(BrokerCallError) as raised:
            admin_client.list_pullable_registries()
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
