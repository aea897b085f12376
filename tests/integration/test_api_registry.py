"""RegistryService through a real grpc.aio server over mTLS: CRUD, paging, etags, bad input."""

from __future__ import annotations

import sqlite3
from typing import Any

import grpc
import pytest
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import (
    AsyncBrokerClient,
    BrokerCallError,
    BrokerClient,
    basic_credential,
)
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret

from tests.harness.canary import find_in_text, find_in_tree, new_canary
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE
from tests.integration.conftest import RunningBroker

pytestmark = pytest.mark.integration

GENERIC = registry_pb2.REGISTRY_TYPE_GENERIC
DEFAULT_PASSWORD = "s3cret-value"
OFFLINE_URL = "https://127.0.0.1:9"  # never dialled: these records are not tested


def registry(name: str, url: str = OFFLINE_URL, ca_pem: str = "", **fields: Any) -> Any:
    return registry_pb2.Registry(
        display_name=name,
        type=fields.pop("type", GENERIC),
        url=url,
        registry_ca_pem=ca_pem,
        **fields,
    )


def credential(username: str = "alice", password: str = DEFAULT_PASSWORD) -> Any:
    return basic_credential(username, Secret(password))


def secret_rows(home: Home) -> int:
    """How many credential envelopes the local secret store holds."""
    if not home.secrets_db.exists():
        return 0
    with sqlite3.connect(f"file:{home.secrets_db}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0])


def call_error(excinfo: pytest.ExceptionInfo[BrokerCallError]) -> BrokerCallError:
    return excinfo.value


class TestCreateGetList:
    def test_create_returns_the_record_without_secrets(self, admin_client: BrokerClient) -> None:
        """Create answers the stored record: name, host, username, version 1, never the password."""
        created = admin_client.create_registry(
            registry("team-a"), credential(password="pw-visible?")
        )
        assert created.name.startswith("registries/")
        assert created.display_name == "team-a"
        assert created.host == "127.0.0.1:9"
        assert created.username == "alice"
        assert created.credential_version == 1
        assert created.creator == "spiffe://pullbroker.local/admin"
        assert created.etag
        assert "pw-visible?" not in str(created)

    def test_get_by_resource_name_and_display_name(self, admin_client: BrokerClient) -> None:
        """GetRegistry finds a record by registries/<id> and by display name."""
        created = admin_client.create_registry(registry("team-b"), credential())
        assert admin_client.get_registry(created.name).etag == created.etag
        assert admin_client.get_registry("team-b").name == created.name

    def test_get_unknown_is_not_found(self, admin_client: BrokerClient) -> None:
        """An unknown registry is NOT_FOUND."""
        with pytest.raises(BrokerCallError) as caught:
            admin_client.get_registry("registries/does-not-exist")
        assert caught.value.code is grpc.StatusCode.NOT_FOUND

    def test_duplicate_display_name_already_exists(self, admin_client: BrokerClient) -> None:
        """A second record with the same display name is ALREADY_EXISTS."""
        admin_client.create_registry(registry("dup"), credential())
        with pytest.raises(BrokerCallError) as caught:
            admin_client.create_registry(registry("dup"), credential())
        assert caught.value.code is grpc.StatusCode.ALREADY_EXISTS

    def test_list_pages_through_every_record_once(self, admin_client: BrokerClient) -> None:
        """ListRegistries pages with next_page_token until every record was seen exactly once."""
        names = {
            admin_client.create_registry(
                registry(f"page-{i}", repositories=[f"page{i}/*"]), credential()
            ).name
            for i in range(5)
        }
        seen: list[str] = []
        token, pages = "", 0
        while True:
            page = admin_client.list_registries(page_size=2, page_token=token)
            assert len(page.registries) <= 2
            seen += [r.name for r in page.registries]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert pages == 3
        assert sorted(seen) == sorted(names)

    def test_negative_page_size_is_invalid(self, admin_client: BrokerClient) -> None:
        """A negative page size is INVALID_ARGUMENT."""
        with pytest.raises(BrokerCallError) as caught:
            admin_client.list_registries(page_size=-1)
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT


AWS = registry_pb2.Credential(
    aws=registry_pb2.AwsCredential(
        access_key_id="AKIAIOSFODNN7EXAMPLE", secret_access_key="aws-secret-1"
    )
)
KINDS = {
    "ghcr": (registry_pb2.REGISTRY_TYPE_GHCR, "", "ghcr.io"),
    "quay": (registry_pb2.REGISTRY_TYPE_QUAY, "", "quay.io"),
    "docker_hub": (registry_pb2.REGISTRY_TYPE_DOCKER_HUB, "", "registry-1.docker.io"),
    "harbor": (
        registry_pb2.REGISTRY_TYPE_HARBOR,
        "https://harbor.example.com",
        "harbor.example.com",
    ),
    "acr": (registry_pb2.REGISTRY_TYPE_ACR, "https://acmeteam.azurecr.io", "acmeteam.azurecr.io"),
    "ecr": (
        registry_pb2.REGISTRY_TYPE_ECR,
        "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
    ),
}


class TestKinds:
    @pytest.mark.parametrize("kind", sorted(KINDS))
    def test_kind_is_served(self, kind: str, admin_client: BrokerClient) -> None:
        """Each registry kind the CLI offers is accepted, with its default or derived host."""
        type_, url, host = KINDS[kind]
        cred = AWS if kind == "ecr" else credential()
        created = admin_client.create_registry(
            registry(f"k-{kind}".replace("_", "-"), url, type=type_), cred
        )
        assert created.host == host
        assert created.type == type_
        if kind == "ecr":
            assert created.region == "eu-west-1"


class TestUpdateDelete:
    def test_rename_changes_name_and_etag(self, admin_client: BrokerClient) -> None:
        """Renaming through update_mask changes the display name and the etag."""
        created = admin_client.create_registry(registry("old-name"), credential())
        target = registry_pb2.Registry(
            name=created.name, etag=created.etag, display_name="new-name"
        )
        updated = admin_client.update_registry(target, ["display_name"])
        assert updated.display_name == "new-name"
        assert updated.etag != created.etag
        assert admin_client.get_registry("new-name").name == created.name
        with pytest.raises(BrokerCallError) as caught:
            admin_client.get_registry("old-name")
        assert caught.value.code is grpc.StatusCode.NOT_FOUND

    def test_rotate_bumps_credential_version(self, admin_client: BrokerClient) -> None:
        """Sending a credential rotates it: version 2, new username, new etag. (No registry
        listens at this record's url, so the rotation skips its test.)"""
        created = admin_client.create_registry(registry("rot"), credential("alice"))
        target = registry_pb2.Registry(name=created.name, etag=created.etag)
        new = credential("carol", "new-secret")
        updated = admin_client.update_registry(target, [], new, skip_test=True)
        assert updated.credential_version == 2
        assert updated.username == "carol"
        assert updated.etag != created.etag

    def test_stale_etag_is_aborted(self, admin_client: BrokerClient) -> None:
        """An update with an etag that no longer matches is ABORTED and changes nothing."""
        created = admin_client.create_registry(registry("race"), credential())
        fresh = admin_client.update_registry(
            registry_pb2.Registry(name=created.name, etag=created.etag, display_name="race-2"),
            ["display_name"],
        )
        stale = registry_pb2.Registry(name=created.name, etag=created.etag, display_name="race-3")
        with pytest.raises(BrokerCallError) as caught:
            admin_client.update_registry(stale, ["display_name"])
        assert caught.value.code is grpc.StatusCode.ABORTED
        assert admin_client.get_registry(created.name).display_name == fresh.display_name

    def test_update_without_changes_is_invalid(self, admin_client: BrokerClient) -> None:
        """An update with no mask paths and no credential is INVALID_ARGUMENT."""
        created = admin_client.create_registry(registry("noop"), credential())
        target = registry_pb2.Registry(name=created.name, etag=created.etag)
        with pytest.raises(BrokerCallError) as caught:
            admin_client.update_registry(target, [])
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "update_mask" in caught.value.message

    def test_unknown_mask_path_is_invalid(self, admin_client: BrokerClient) -> None:
        """A mask path that cannot be updated (url) is INVALID_ARGUMENT naming the allowed ones."""
        created = admin_client.create_registry(registry("mask"), credential())
        target = registry_pb2.Registry(name=created.name, etag=created.etag, url="https://x")
        with pytest.raises(BrokerCallError) as caught:
            admin_client.update_registry(target, ["url"])
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "display_name" in caught.value.message

    def test_delete_removes_record_and_secret(
        self, broker: RunningBroker, admin_client: BrokerClient
    ) -> None:
        """Delete removes the record and its credential from the secret store."""
        created = admin_client.create_registry(registry("gone"), credential())
        assert secret_rows(broker.home) == 1
        admin_client.delete_registry(created.name, created.etag)
        with pytest.raises(BrokerCallError) as caught:
            admin_client.get_registry(created.name)
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert secret_rows(broker.home) == 0

    def test_delete_with_stale_etag_is_aborted(self, admin_client: BrokerClient) -> None:
        """Delete with a stale etag is ABORTED and the record stays."""
        created = admin_client.create_registry(registry("keep"), credential())
        admin_client.update_registry(
            registry_pb2.Registry(name=created.name, etag=created.etag, display_name="keep-2"),
            ["display_name"],
        )
        with pytest.raises(BrokerCallError) as caught:
            admin_client.delete_registry(created.name, created.etag)
        assert caught.value.code is grpc.StatusCode.ABORTED
        assert admin_client.get_registry(created.name).display_name == "keep-2"


class TestConnection:
    def test_saved_registry_connects(
        self, admin_client: BrokerClient, token_registry: TokenAuthRegistry
    ) -> None:
        """TestConnection on a saved record with a good credential is OK over bearer auth."""
        password = token_registry.users[ALICE]
        created = admin_client.create_registry(
            registry("live", token_registry.url, token_registry.ca_pem), credential(ALICE, password)
        )
        result = admin_client.test_connection(name=created.name, repository="team/app")
        assert result.outcome == registry_pb2.CONNECTION_OUTCOME_OK, result.message
        assert result.auth_scheme == "bearer"

    def test_unsaved_registry_with_wrong_password_is_rejected(
        self, broker: RunningBroker, admin_client: BrokerClient, token_registry: TokenAuthRegistry
    ) -> None:
        """An unsaved registry with a wrong password is CREDENTIAL_REJECTED; nothing is saved."""
        wrong = new_canary("wrong")
        result = admin_client.test_connection(
            registry=registry("probe", token_registry.url, token_registry.ca_pem),
            credential=credential(ALICE, wrong),
            repository="team/app",
        )
        assert result.outcome == registry_pb2.CONNECTION_OUTCOME_CREDENTIAL_REJECTED
        assert result.message
        assert not find_in_text(result.message, wrong)
        assert list(admin_client.iter_registries()) == []
        assert secret_rows(broker.home) == 0

    def test_create_with_failing_test_creates_nothing(
        self, broker: RunningBroker, admin_client: BrokerClient, token_registry: TokenAuthRegistry
    ) -> None:
        """Create with test=true and a bad credential fails FAILED_PRECONDITION, writing nothing."""
        wrong = new_canary("wrong")
        with pytest.raises(BrokerCallError) as caught:
            admin_client.create_registry(
                registry("tested", token_registry.url, token_registry.ca_pem),
                credential(ALICE, wrong),
                test=True,
            )
        assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
        assert not find_in_text(caught.value.message, wrong)
        assert list(admin_client.iter_registries()) == []
        assert secret_rows(broker.home) == 0


BAD_CREATES = {
    "unspecified type": (
        registry("bad", type=registry_pb2.REGISTRY_TYPE_UNSPECIFIED),
        "registry.type",
    ),
    "unknown type number": (registry("bad", type=99), "registry.type"),
    "missing display name": (registry(""), "display_name"),
    "missing url": (registry("bad", url=""), "url"),
    "http url": (registry("bad", url="http://127.0.0.1:5000"), "https"),
}


class TestBadInput:
    @pytest.mark.parametrize("case", sorted(BAD_CREATES))
    def test_bad_registry_is_invalid_and_writes_nothing(
        self, case: str, broker: RunningBroker, admin_client: BrokerClient
    ) -> None:
        """Each malformed registry is INVALID_ARGUMENT naming the field; nothing is stored."""
        canary = new_canary("bad-input")
        message, field = BAD_CREATES[case]
        with pytest.raises(BrokerCallError) as caught:
            admin_client.create_registry(message, credential(password=canary))
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert field in caught.value.message
        assert not find_in_text(caught.value.message, canary)
        assert list(admin_client.iter_registries()) == []
        assert secret_rows(broker.home) == 0
        assert find_in_tree(broker.home.root, canary) == []

    def test_missing_credential_is_invalid(
        self, broker: RunningBroker, admin_client: BrokerClient
    ) -> None:
        """A generic registry without a credential is INVALID_ARGUMENT saying one is required."""
        with pytest.raises(BrokerCallError) as caught:
            admin_client.create_registry(registry("nocred"))
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "credential" in caught.value.message
        assert list(admin_client.iter_registries()) == []

    def test_empty_password_is_invalid(
        self, broker: RunningBroker, admin_client: BrokerClient
    ) -> None:
        """A credential with an empty password is INVALID_ARGUMENT naming the field."""
        with pytest.raises(BrokerCallError) as caught:
            admin_client.create_registry(registry("nopw"), credential(password=""))
        assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "password" in caught.value.message
        assert secret_rows(broker.home) == 0

    def test_oversized_request_is_refused(self, admin_client: BrokerClient) -> None:
        """A request over the 1 MiB limit is RESOURCE_EXHAUSTED and nothing is created."""
        huge = registry("huge", ca_pem="x" * (2 * 1024 * 1024))
        with pytest.raises(BrokerCallError) as caught:
            admin_client.create_registry(huge, credential())
        assert caught.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert list(admin_client.iter_registries()) == []


class TestAsyncClient:
    async def test_async_client_round_trip(self, broker: RunningBroker) -> None:
        """AsyncBrokerClient creates, lists and deletes through the same API."""
        async with AsyncBrokerClient(broker.target("admin")) as client:
            created = await client.create_registry(registry("async-a"), credential())
            listed = await client.list_registries()
            assert [r.name for r in listed.registries] == [created.name]
            await client.delete_registry(created.name)
            assert list((await client.list_registries()).registries) == []

    async def test_async_errors_carry_code(self, broker: RunningBroker) -> None:
        """AsyncBrokerClient raises BrokerCallError with the status code and message."""
        async with AsyncBrokerClient(broker.target("admin")) as client:
            with pytest.raises(BrokerCallError) as caught:
                await client.get_registry("registries/nope")
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert caught.value.request_id
