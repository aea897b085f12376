"""BearerMinter against the real distribution registry and token server (tests/harness).

Users (tests/harness/standard.py): alice pulls team/*, bob pulls team/app only, anonymous
pulls public/*. Tokens are checked by using them: a manifest GET at the registry itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pullbroker_client.registry.errors import NotAllowed
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import (
    BasicNotAllowed,
    CredentialRejected,
    RegistryTLSFailure,
    RegistryUnreachable,
)
from pullbroker_service.domain.model import (
    AuthKind,
    BasicCredential,
    MintedToken,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.bearer import BearerMinter

from tests.harness.broker_config import LOOPBACK
from tests.harness.canary import find_in_text, new_canary
from tests.harness.certs import TestCA
from tests.harness.process import free_port
from tests.harness.registry import HtpasswdRegistry, PlainRegistry, TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.harness.token_server import TokenServer
from tests.integration import node_fetch

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def record_for(
    url: str,
    ca_pem: str,
    *,
    kind: RegistryKind = RegistryKind.GENERIC,
    allow_basic_passthrough: bool = False,
) -> RegistryRecord:
    host = url.removeprefix("https://")
    return RegistryRecord(
        id="reg-under-test",
        display_name="acme",
        kind=kind,
        url=url,
        host=host,
        username="",
        registry_ca_pem=ca_pem,
        region="",
        allow_basic_passthrough=allow_basic_passthrough,
        credential_version=1,
        secret_ref=None,
        creator="test",
        create_time=NOW,
        update_time=NOW,
        etag="e",
    )


async def manifest_digest(registry: TokenAuthRegistry, token: MintedToken, repo: str) -> str:
    """repo:v1's digest, fetched with `token` through the node's fetcher."""
    authorization = Secret(f"Bearer {token.token.reveal()}")
    return await node_fetch.manifest_digest(
        registry.url, registry.ca_pem, repo, "v1", authorization
    )


@pytest.fixture
async def minter() -> AsyncIterator[BearerMinter]:
    m = BearerMinter(timeout=5.0, dial_policy=LOOPBACK)
    try:
        yield m
    finally:
        await m.aclose()


@pytest.fixture
def token_record(token_registry: TokenAuthRegistry) -> RegistryRecord:
    return record_for(token_registry.url, token_registry.ca_pem)


def user(registry: TokenAuthRegistry, name: str) -> BasicCredential:
    return BasicCredential(name, Secret(registry.users[name]))


class TestBearerTokens:
    """Tokens minted from stored credentials work for exactly their repository."""

    async def test_alice_token_reads_the_manifest(
        self,
        minter: BearerMinter,
        token_registry: TokenAuthRegistry,
        token_record: RegistryRecord,
        pushed_images: StandardImages,
    ) -> None:
        """A token for team/app fetches team/app's manifest; it is pull-scoped and expires later."""
        token = await minter.mint(token_record, user(token_registry, ALICE), "team/app")
        assert (token.auth_kind, token.username) == (AuthKind.BEARER, "")
        assert token.scope == "repository:team/app:pull"
        assert token.expires_at > datetime.now(UTC)
        assert await manifest_digest(token_registry, token, "team/app") == pushed_images.app.digest

    async def test_token_is_limited_to_its_repository(
        self,
        minter: BearerMinter,
        token_registry: TokenAuthRegistry,
        token_record: RegistryRecord,
        pushed_images: StandardImages,
    ) -> None:
        """bob's team/app token reads team/app but the registry refuses it for team/other."""
        token = await minter.mint(token_record, user(token_registry, BOB), "team/app")
        assert await manifest_digest(token_registry, token, "team/app") == pushed_images.app.digest
        with pytest.raises(NotAllowed):
            await manifest_digest(token_registry, token, "team/other")

    async def test_only_pull_is_requested(
        self,
        minter: BearerMinter,
        token_registry: TokenAuthRegistry,
        token_record: RegistryRecord,
        token_server: TokenServer,
    ) -> None:
        """alice may push to team/*, yet the token endpoint is only ever asked for pull."""
        await minter.mint(token_record, user(token_registry, ALICE), "team/app")
        seen = [(r.user, r.service, r.scopes) for r in token_server.requests]
        assert seen == [(ALICE, "test-registry", ("repository:team/app:pull",))]

    async def test_anonymous_public_token(
        self,
        minter: BearerMinter,
        token_registry: TokenAuthRegistry,
        pushed_images: StandardImages,
    ) -> None:
        """A public record gets an anonymous token that reads public/hello."""
        record = record_for(token_registry.url, token_registry.ca_pem, kind=RegistryKind.PUBLIC)
        token = await minter.mint(record, None, "public/hello")
        assert token.auth_kind is AuthKind.BEARER
        digest = await manifest_digest(token_registry, token, "public/hello")
        assert digest == pushed_images.hello.digest


class TestFailures:
    """Upstream failures become broker errors a person can act on, without secrets."""

    async def test_wrong_password(
        self, minter: BearerMinter, token_registry: TokenAuthRegistry, token_record: RegistryRecord
    ) -> None:
        """A wrong password is CredentialRejected naming host and record, not the password."""
        wrong = new_canary("wrong-password")
        with pytest.raises(CredentialRejected) as info:
            await minter.mint(token_record, BasicCredential(ALICE, Secret(wrong)), "team/app")
        message = str(info.value)
        assert (
            f"registry {token_registry.host} rejected the credential of registry 'acme'" in message
        )
        assert "check the username and password/token" in message
        assert not find_in_text(message, wrong)

    async def test_unreachable(self, minter: BearerMinter, test_ca: TestCA) -> None:
        """Nothing listening on the port is RegistryUnreachable."""
        record = record_for(f"https://127.0.0.1:{free_port()}", test_ca.pem)
        with pytest.raises(RegistryUnreachable, match="cannot connect"):
            await minter.mint(record, BasicCredential("a", Secret("b")), "team/app")

    async def test_wrong_ca(
        self, minter: BearerMinter, token_record: RegistryRecord, tmp_path: Path
    ) -> None:
        """A registry certificate not signed by the record's CA is RegistryTLSFailure."""
        other_ca = TestCA.create(tmp_path / "other-ca", "unrelated CA")
        record = replace(token_record, registry_ca_pem=other_ca.pem)
        with pytest.raises(RegistryTLSFailure, match="registry_ca_pem"):
            await minter.mint(record, BasicCredential("a", Secret("b")), "team/app")


class TestProbe:
    """probe() classifies instead of raising, and reports the challenge scheme."""

    @pytest.mark.parametrize(
        ("who", "repository", "outcome"),
        [
            (ALICE, "team/app", "ok"),
            (ALICE, "", "ok"),
            (BOB, "team/other", "not_allowed"),
            ("wrong", "team/app", "credential_rejected"),
        ],
    )
    async def test_outcomes(
        self,
        minter: BearerMinter,
        token_registry: TokenAuthRegistry,
        token_record: RegistryRecord,
        pushed_images: StandardImages,
        who: str,
        repository: str,
        outcome: str,
    ) -> None:
        """Good credential, missing grant and bad password each get their outcome."""
        credential = (
            BasicCredential(ALICE, Secret("not-the-password"))
            if who == "wrong"
            else user(token_registry, who)
        )
        result = await minter.probe(token_record, credential, repository)
        assert (result.outcome, result.auth_scheme) == (outcome, "bearer"), result.message
        assert result.latency_seconds > 0

    async def test_tls_and_unreachable(
        self, minter: BearerMinter, token_record: RegistryRecord, tmp_path: Path
    ) -> None:
        """A foreign CA probes as tls_failure and a dead port as unreachable."""
        other_ca = TestCA.create(tmp_path / "other-ca", "unrelated CA")
        tls = await minter.probe(replace(token_record, registry_ca_pem=other_ca.pem), None, "")
        dead = replace(token_record, url=f"https://127.0.0.1:{free_port()}")
        unreachable = await minter.probe(dead, None, "")
        assert (tls.outcome, unreachable.outcome) == ("tls_failure", "unreachable")


@pytest.fixture(scope="module")
def basic_registry(
    tmp_path_factory: pytest.TempPathFactory, test_ca: TestCA
) -> Iterator[HtpasswdRegistry]:
    registry = HtpasswdRegistry(tmp_path_factory.mktemp("htpasswd-registry"), test_ca)
    registry.add_user("carol", new_canary("carol"))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


class TestBasicAndOpenRegistries:
    """Basic-only registries need explicit pass-through; open registries get ANONYMOUS."""

    async def test_basic_refused_by_default(
        self, minter: BearerMinter, basic_registry: HtpasswdRegistry
    ) -> None:
        """Without pass-through a Basic-only registry is BasicNotAllowed, saying how to allow it."""
        record = record_for(basic_registry.url, basic_registry.ca_pem)
        carol = BasicCredential("carol", Secret(basic_registry.users["carol"]))
        with pytest.raises(BasicNotAllowed, match="allow_basic_passthrough"):
            await minter.mint(record, carol, "team/app")
        result = await minter.probe(record, carol, "")
        assert (result.outcome, result.auth_scheme) == ("unsupported_auth", "basic")

    async def test_basic_passthrough(
        self, minter: BearerMinter, basic_registry: HtpasswdRegistry
    ) -> None:
        """With pass-through the credential is handed out as BASIC, and the probe checks it."""
        record = record_for(basic_registry.url, basic_registry.ca_pem, allow_basic_passthrough=True)
        carol = BasicCredential("carol", Secret(basic_registry.users["carol"]))
        token = await minter.mint(record, carol, "team/app")
        assert (token.auth_kind, token.username, token.token) == (
            AuthKind.BASIC,
            "carol",
            carol.password,
        )
        assert (await minter.probe(record, carol, "")).outcome == "ok"
        wrong = BasicCredential("carol", Secret("nope"))
        assert (await minter.probe(record, wrong, "")).outcome == "credential_rejected"

    async def test_open_registry_is_anonymous(
        self, minter: BearerMinter, tmp_path: Path, test_ca: TestCA
    ) -> None:
        """A registry answering 200 on /v2/ gets an ANONYMOUS token with no secret."""
        with PlainRegistry(tmp_path / "plain", test_ca) as plain:
            record = record_for(plain.url, plain.ca_pem)
            token = await minter.mint(record, None, "team/app")
            result = await minter.probe(record, None, "team/app")
        assert (token.auth_kind, token.token.reveal()) == (AuthKind.ANONYMOUS, "")
        assert (result.outcome, result.auth_scheme) == ("ok", "none")
