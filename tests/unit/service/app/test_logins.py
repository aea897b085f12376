"""Registry logins: the pull checks first, then per kind a login, a pass-through, or a refusal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.registry_logins import LoginIssuer
from pullbroker_service.app.token_guard import GuardedLoginIssuer
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.domain.errors import FailedPrecondition, ScopeNotAllowed
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    AuthKind,
    AwsCredential,
    AzureServicePrincipal,
    BasicCredential,
    Credential,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.runtime_logins import MintedLogin
from structlog.testing import capture_logs

from tests.unit.service.conftest import ADMIN, NODE, Core, FakeMinter, build_core

ADMIN_CALLER = Identity(ADMIN, frozenset({"admin"}))
NODE_CALLER = Identity(NODE, frozenset({"node"}))
ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ROLE = "arn:aws:iam::123456789012:role/puller"
ACR_HOST = "cloudreg.azurecr.io"
TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT = "0b7b5b3e-5f3c-4d39-9b51-6f8d2c1e0a11"


@dataclass
class FakeLoginMinter(FakeMinter):
    """A cloud minter with `login`: an identity token per call, each call recorded."""

    logins: list[str] = field(default_factory=list)

    async def login(
        self, registry: RegistryRecord, credential: Credential | None, repository: str
    ) -> MintedLogin:
        self.logins.append(repository)
        now = datetime.now(UTC)
        return MintedLogin(
            AuthKind.BASIC, "00000000-0000-0000-0000-000000000000",
            Secret(f"refresh-{len(self.logins)}"), "", now, now + timedelta(hours=1),
            repository, identity_token=True,
        )  # fmt: skip


@dataclass
class World:
    core: Core
    ecr: FakeMinter
    acr: FakeLoginMinter
    logins: LoginIssuer


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """The unit broker core with an ECR and an ACR minter and a LoginIssuer beside its issuer."""
    core = build_core(tmp_path)
    ecr, acr = FakeMinter(auth_kind=AuthKind.BASIC), FakeLoginMinter()
    minters = MintersByKind(
        {
            RegistryKind.GENERIC: core.minter,
            RegistryKind.DOCKER_HUB: core.minter,
            RegistryKind.ECR: ecr,
            RegistryKind.ACR: acr,
        }
    )
    core.registries = Registries(core.store, core.secrets, minters, core.cache)
    core.issuer = TokenIssuer(core.store, core.secrets, minters, core.cache, core.policy)
    logins = LoginIssuer(core.store, core.secrets, minters, core.cache, core.policy)
    try:
        yield World(core, ecr, acr, logins)
    finally:
        await core.store.close()
        await core.secrets.close()


async def add(
    world: World, kind: RegistryKind, url: str, credential: Credential, *, passthrough: bool = False
) -> RegistryRecord:
    spec = RegistrySpec("reg", kind, url, allow_basic_passthrough=passthrough)
    return await world.core.registries.create(ADMIN_CALLER, spec, credential, test=False)


BASIC = BasicCredential("robot", Secret("stored-password"))


class TestCloudLogins:
    async def test_ecr_login_is_the_aws_token_and_scoped_only_with_a_role(
        self, world: World
    ) -> None:
        """ECR: the minter's Basic token; repository_scoped only when a role limits it."""
        await add(world, RegistryKind.ECR, f"https://{ECR_HOST}",
                  AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("aws-secret")))  # fmt: skip
        login, record = await world.logins.login(
            NODE_CALLER, f"{ECR_HOST}/team/app:v1", None, False
        )
        assert (login.username, login.token.reveal()) == ("robot", "minted-1")
        assert (login.repository_scoped, login.passthrough, login.identity_token) == (
            False, False, False,
        )  # fmt: skip
        assert record.kind is RegistryKind.ECR
        current = await world.core.registries.get("reg")
        await world.core.registries.update(
            ADMIN_CALLER, "reg", current.etag, display_name=None, registry_ca_pem=None,
            allow_basic_passthrough=None,
            credential=AwsCredential("AKIAIOSFODNN7EXAMPLE", Secret("aws-secret"), ROLE),
        )  # fmt: skip
        scoped, _ = await world.logins.login(NODE_CALLER, f"{ECR_HOST}/team/app:v1", None, False)
        assert scoped.repository_scoped
        assert scoped.scope == "repository:team/app:pull"

    async def test_login_is_cached_per_registry_and_refreshed_on_demand(self, world: World) -> None:
        """ACR: one login per registry across repositories; force_refresh mints anew."""
        await add(world, RegistryKind.ACR, f"https://{ACR_HOST}",
                  AzureServicePrincipal(TENANT, CLIENT, Secret("sp-secret")))  # fmt: skip
        first, _ = await world.logins.login(NODE_CALLER, f"{ACR_HOST}/team/app", None, False)
        other, _ = await world.logins.login(NODE_CALLER, f"{ACR_HOST}/team/web", None, False)
        forced, _ = await world.logins.login(NODE_CALLER, f"{ACR_HOST}/team/app", None, True)
        assert first.identity_token
        assert first.token == other.token != forced.token
        assert world.acr.logins == ["team/app", "team/app"]
        assert world.acr.mints == []  # a login is not a pull token

    async def test_policy_is_checked_before_anything_is_minted(self, world: World) -> None:
        """A repository outside the node's grants: ScopeNotAllowed and no login minted."""
        await add(world, RegistryKind.ACR, f"https://{ACR_HOST}",
                  AzureServicePrincipal(TENANT, CLIENT, Secret("sp-secret")))  # fmt: skip
        with pytest.raises(ScopeNotAllowed, match="team/a/b"):
            await world.logins.login(NODE_CALLER, f"{ACR_HOST}/team/a/b", None, False)
        assert world.acr.logins == []


class TestTokenEndpointKinds:
    async def test_bearer_kind_is_refused_without_any_io(self, world: World) -> None:
        """No pass-through allowed: FAILED_PRECONDITION saying to pull with the sidecar."""
        await add(world, RegistryKind.GENERIC, "https://reg.example:5000", BASIC)
        image = "reg.example:5000/team/app:v1"
        with pytest.raises(FailedPrecondition) as caught:
            await world.logins.login(NODE_CALLER, image, None, False)
        message = str(caught.value)
        assert "issues only repository-scoped tokens" in message
        assert f"pullbroker-sidecar pull {image}" in message
        for advice in ("--dest docker-daemon", "--dest containerd", "--dest docker-archive:FILE"):
            assert advice in message
        assert "podman load -i FILE" in message
        assert world.core.minter.mints == []

    async def test_basic_only_registry_gives_its_credential_as_passthrough(
        self, world: World
    ) -> None:
        """Pass-through: the stored credential, marked and logged; the pull cache is shared."""
        await add(world, RegistryKind.GENERIC, "https://reg.example:5000", BASIC, passthrough=True)
        world.core.minter.auth_kind = AuthKind.BASIC
        with capture_logs() as logs:
            login, _ = await world.logins.login(
                NODE_CALLER, "reg.example:5000/team/app", None, False
            )
        token, _ = await world.core.issuer.issue(
            NODE_CALLER, "reg.example:5000/team/app", None, False
        )
        assert login.passthrough
        assert login.token == token.token
        assert len(world.core.minter.mints) == 1
        audits = [e for e in logs if e["event"] == "basic_passthrough_used"]
        assert [a["identity"] for a in audits] == [NODE]

    async def test_passthrough_record_on_a_bearer_registry_mints_once(self, world: World) -> None:
        """Allowed but the registry speaks Bearer: refused; the token minted to find out is
        cached for pulls, so a second login asks the registry nothing."""
        await add(world, RegistryKind.GENERIC, "https://reg.example:5000", BASIC, passthrough=True)
        for _ in range(2):
            with pytest.raises(FailedPrecondition, match="repository-scoped"):
                await world.logins.login(NODE_CALLER, "reg.example:5000/team/app", None, False)
        assert len(world.core.minter.mints) == 1


class TestGuard:
    async def test_every_login_is_audited_with_its_reach(
        self, world: World, tmp_path: Path
    ) -> None:
        """Issued and refused logins each become one audit line; never the secret."""
        await add(world, RegistryKind.ACR, f"https://{ACR_HOST}",
                  AzureServicePrincipal(TENANT, CLIENT, Secret("sp-secret")))  # fmt: skip
        sink = AuditSink(tmp_path / "audit" / "audit.jsonl")
        guarded = GuardedLoginIssuer(world.logins, audit=sink)
        login, _ = await guarded.login(NODE_CALLER, f"{ACR_HOST}/team/app", None, False)
        with pytest.raises(ScopeNotAllowed):
            await guarded.login(NODE_CALLER, f"{ACR_HOST}/elsewhere/a/b", None, False)
        sink.close()
        text = sink.path.read_text()
        lines = [json.loads(line) for line in text.splitlines()]
        assert [(e["outcome"], e["repository"]) for e in lines] == [
            ("allowed", "team/app"), ("denied", "elsewhere/a/b"),
        ]  # fmt: skip
        assert "registry login" in lines[0]["reason"]
        assert "whatever the registry's stored identity may pull" in lines[0]["reason"]
        assert login.token.reveal() not in text
