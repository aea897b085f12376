"""The ACR minter against local stand-ins for Azure AD and ACR's token service, and a real registry.

Azure AD and ACR's token service cannot run on this machine: fixtures_azure.py stands in for
them, following the documented protocols (AAD's client-credentials grant; ACR's
/oauth2/exchange and /oauth2/token as github.com/Azure/acr docs/AAD-OAuth.md describes). The
registry in front is the real distribution registry, which verifies every token pulled with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import (
    CredentialRejected,
    InvalidRegistry,
    RateLimited,
    RegistryUnreachable,
)
from pullbroker_service.domain.model import (
    AuthKind,
    AzureServicePrincipal,
    BasicCredential,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.azure import AzureConfig, AzureMinter

from tests.harness.broker_config import LOOPBACK
from tests.harness.https_server import json_reply
from tests.harness.process import free_port
from tests.integration.cloud.fixtures_azure import AzureWorld
from tests.integration.cloud.helpers import get_manifest, granted
from tests.integration.cloud.records import record

pytestmark = pytest.mark.integration

Make = Callable[..., AzureMinter]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Build minters; all closed afterwards."""
    made: list[AzureMinter] = []

    def build(config: AzureConfig | None = None) -> AzureMinter:
        made.append(AzureMinter(config, dial_policy=LOOPBACK))
        return made[-1]

    yield build
    for azure_minter in made:
        await azure_minter.aclose()


@pytest.fixture
def acr(azure: AzureWorld) -> AzureWorld:
    """The Azure world with request logs and injected failures cleared."""
    azure.aad.clear()
    azure.acr.clear()
    return azure


def config_for(world: AzureWorld, **changes: object) -> AzureConfig:
    """Pointed at the AAD fixture, trusting the fixtures' CA."""
    settings: dict[str, object] = {
        "authority": world.aad.url,
        "allowed_authority_hosts": frozenset({world.aad.host}),
        "authority_ca_pem": world.registry.ca_pem,
    }
    settings.update(changes)
    return AzureConfig(**settings)  # type: ignore[arg-type]


def target(world: AzureWorld) -> RegistryRecord:
    return record(RegistryKind.ACR, world.registry.host, ca_pem=world.registry.ca_pem, name="acr")


def basic(world: AzureWorld, user: str, password: str | None = None) -> BasicCredential:
    return BasicCredential(user, Secret(password or world.passwords[user]))


def principal(world: AzureWorld, name: str, *, secret: str | None = None) -> AzureServicePrincipal:
    found = world.principals[name]
    return AzureServicePrincipal(found.tenant, found.client_id, Secret(secret or found.secret))


class TestBasic:
    async def test_admin_token_pulls_the_repository(self, make: Make, acr: AzureWorld) -> None:
        """Basic admin credentials become a bearer token that pulls team/app:v1."""
        token = await make(config_for(acr)).mint(target(acr), basic(acr, "admin"), "team/app")
        assert token.auth_kind is AuthKind.BEARER
        assert granted(token) == [("team/app", ("pull",))]
        response = get_manifest(target(acr).url, acr.registry.ca_pem, token, "team/app")
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == acr.app_digest

    async def test_lifetime_comes_from_the_jwt(self, make: Make, acr: AzureWorld) -> None:
        """ACR sends no expires_in: the token's exp claim (600 s here) sets the lifetime."""
        token = await make(config_for(acr)).mint(target(acr), basic(acr, "admin"), "team/app")
        lifetime = token.expires_at - token.issued_at
        assert timedelta(seconds=60) < lifetime <= timedelta(seconds=600)

    async def test_wrong_password_is_credential_rejected(self, make: Make, acr: AzureWorld) -> None:
        """A wrong password gives CredentialRejected, without the password."""
        wrong = basic(acr, "admin", "not-the-password-canary")
        with pytest.raises(CredentialRejected, match="admin user or ACR token") as caught:
            await make(config_for(acr)).mint(target(acr), wrong, "team/app")
        assert "not-the-password-canary" not in str(caught.value)

    async def test_scoped_acr_token_probes_not_allowed_elsewhere(
        self, make: Make, acr: AzureWorld
    ) -> None:
        """An ACR token limited to team/app probes ok there and not_allowed on team/other."""
        minter = make(config_for(acr))
        here = await minter.probe(target(acr), basic(acr, "app-token"), "team/app")
        elsewhere = await minter.probe(target(acr), basic(acr, "app-token"), "team/other")
        assert (here.outcome, elsewhere.outcome) == ("ok", "not_allowed")
        assert "may not pull team/other" in elsewhere.message


class TestServicePrincipal:
    async def test_principal_token_pulls_the_repository(self, make: Make, acr: AzureWorld) -> None:
        """AAD token -> exchange -> refresh grant gives a token that pulls team/app:v1."""
        token = await make(config_for(acr)).mint(target(acr), principal(acr, "reader"), "team/app")
        assert granted(token) == [("team/app", ("pull",))]
        response = get_manifest(target(acr).url, acr.registry.ca_pem, token, "team/app")
        assert response.status_code == 200

    async def test_follows_the_documented_calls(self, make: Make, acr: AzureWorld) -> None:
        """One client-credentials call, one exchange, one refresh-token grant, in that order."""
        await make(config_for(acr)).mint(target(acr), principal(acr, "reader"), "team/app")
        (aad,) = acr.aad.seen()
        assert aad.grant_type == "client_credentials"
        assert aad.keys == ("client_id", "client_secret", "grant_type", "scope")
        exchange, token = acr.acr.seen()
        assert (exchange.path, exchange.grant_type) == ("/oauth2/exchange", "access_token")
        assert exchange.keys == ("access_token", "grant_type", "service", "tenant")
        assert (token.method, token.path, token.grant_type) == (
            "POST",
            "/oauth2/token",
            "refresh_token",
        )
        assert token.keys == ("grant_type", "refresh_token", "scope", "service")

    async def test_wrong_secret_is_credential_rejected(self, make: Make, acr: AzureWorld) -> None:
        """A wrong client secret gives CredentialRejected naming the fix, not the secret."""
        wrong = principal(acr, "reader", secret="not-the-secret-canary")
        with pytest.raises(CredentialRejected, match="client secret") as caught:
            await make(config_for(acr)).mint(target(acr), wrong, "team/app")
        assert "not-the-secret-canary" not in str(caught.value)
        assert acr.acr.seen() == []

    async def test_unknown_tenant_is_credential_rejected(self, make: Make, acr: AzureWorld) -> None:
        """A tenant AAD does not know gives CredentialRejected."""
        found = acr.principals["reader"]
        stranger = AzureServicePrincipal(
            "00000000-0000-0000-0000-000000000001", found.client_id, Secret(found.secret)
        )
        with pytest.raises(CredentialRejected, match="tenant id"):
            await make(config_for(acr)).mint(target(acr), stranger, "team/app")

    async def test_principal_without_role_probes_not_allowed(
        self, make: Make, acr: AzureWorld
    ) -> None:
        """A valid principal with no role on the registry probes not_allowed."""
        result = await make(config_for(acr)).probe(
            target(acr), principal(acr, "outsider"), "team/app"
        )
        assert result.outcome == "not_allowed"

    async def test_probe_ok(self, make: Make, acr: AzureWorld) -> None:
        """A reader principal probes ok."""
        result = await make(config_for(acr)).probe(
            target(acr), principal(acr, "reader"), "team/app"
        )
        assert (result.outcome, result.auth_scheme) == ("ok", "bearer")


class TestReachability:
    async def test_unreachable_registry(self, make: Make, acr: AzureWorld) -> None:
        """Nothing listening at the registry host gives RegistryUnreachable."""
        gone = record(RegistryKind.ACR, f"127.0.0.1:{free_port()}", ca_pem=acr.registry.ca_pem)
        with pytest.raises(RegistryUnreachable):
            await make(config_for(acr)).mint(gone, basic(acr, "admin"), "team/app")

    async def test_unreachable_aad(self, make: Make, acr: AzureWorld) -> None:
        """Nothing listening at the AAD authority gives RegistryUnreachable."""
        dead = f"127.0.0.1:{free_port()}"
        config = config_for(
            acr, authority=f"https://{dead}", allowed_authority_hosts=frozenset({dead})
        )
        result = await make(config).probe(target(acr), principal(acr, "reader"), "team/app")
        assert result.outcome == "unreachable"
        assert dead in result.message

    async def test_rate_limited_token_endpoint(self, make: Make, acr: AzureWorld) -> None:
        """ACR's 429 becomes RateLimited with its Retry-After."""
        acr.acr.fail_next(
            json_reply(429, {"errors": [{"code": "TOOMANYREQUESTS"}]}, {"Retry-After": "3"})
        )
        with pytest.raises(RateLimited) as caught:
            await make(config_for(acr)).mint(target(acr), principal(acr, "reader"), "team/app")
        assert caught.value.retry_after == 3

    def test_authority_outside_allowed_hosts_is_refused(self) -> None:
        """An AAD authority on a host not allowed is refused before anything is dialled."""
        with pytest.raises(ValueError, match="allowed host"):
            AzureMinter(AzureConfig(authority="https://evil.example"))

    async def test_missing_credential_is_invalid_registry(
        self, make: Make, acr: AzureWorld
    ) -> None:
        """A record without a credential is refused as a record problem."""
        with pytest.raises(InvalidRegistry, match="no credential"):
            await make(config_for(acr)).mint(target(acr), None, "team/app")
