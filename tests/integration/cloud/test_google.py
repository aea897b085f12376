"""The Google minter (gcr, gar) against local stand-ins for Google's endpoints and a real registry.

Google's OAuth token endpoint and its registry token service cannot run on this machine:
fixtures_google.py stands in for them, following Google's documented protocols (the
JWT-bearer grant, verified with the service account's public key; Basic
`oauth2accesstoken:<access token>` at the registry's realm). The registry in front is the real
distribution registry, which verifies every token the tests pull with.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import (
    BrokerError,
    CredentialRejected,
    InvalidRegistry,
    RateLimited,
    RegistryUnreachable,
    UpstreamProtocolError,
)
from pullbroker_service.domain.model import (
    AuthKind,
    GoogleServiceAccount,
    RegistryKind,
    RegistryRecord,
)
from pullbroker_service.minting.google import READ_ONLY_SCOPE, GoogleConfig, GoogleMinter

from tests.harness.broker_config import LOOPBACK
from tests.harness.certs import TestCA
from tests.harness.https_server import json_reply
from tests.harness.process import free_port
from tests.integration.cloud.fixtures_google import (
    OUTSIDER,
    READER,
    UNKNOWN,
    GoogleWorld,
    service_account_key,
)
from tests.integration.cloud.fixtures_https import RealmRegistry, RegistryTokens
from tests.integration.cloud.helpers import get_manifest, granted
from tests.integration.cloud.records import record

pytestmark = pytest.mark.integration

RATE_LIMITED = json_reply(429, {"error": "rate_limited"}, {"Retry-After": "7"})


Make = Callable[..., GoogleMinter]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Build minters (default: allowed to dial the OAuth fixture); all closed afterwards."""
    made: list[GoogleMinter] = []

    def build(config: GoogleConfig | None = None) -> GoogleMinter:
        made.append(GoogleMinter(config, dial_policy=LOOPBACK))
        return made[-1]

    yield build
    for google_minter in made:
        await google_minter.aclose()


def config_for(world: GoogleWorld) -> GoogleConfig:
    """Allowed to dial the OAuth fixture, trusting the fixtures' CA."""
    return GoogleConfig(
        allowed_oauth_hosts=frozenset({world.oauth.host}), oauth_ca_pem=world.registry.ca_pem
    )


def gcr(world: GoogleWorld, kind: RegistryKind = RegistryKind.GCR) -> RegistryRecord:
    return record(kind, world.registry.host, ca_pem=world.registry.ca_pem, name="gcr")


def key(world: GoogleWorld, email: str) -> GoogleServiceAccount:
    return GoogleServiceAccount(Secret(world.keys[email]))


@pytest.fixture
def google_fresh(google: GoogleWorld) -> GoogleWorld:
    """The Google world with request logs and injected failures cleared."""
    google.oauth.clear()
    google.realm.clear()
    return google


class TestMint:
    @pytest.mark.parametrize("kind", [RegistryKind.GCR, RegistryKind.GAR])
    async def test_token_pulls_the_repository(
        self, make: Make, google_fresh: GoogleWorld, kind: RegistryKind
    ) -> None:
        """The minted registry token pulls team/app:v1 from the real registry."""
        target = record(kind, google_fresh.registry.host, ca_pem=google_fresh.registry.ca_pem)
        token = await make(config_for(google_fresh)).mint(
            target, key(google_fresh, READER), "team/app"
        )
        assert token.auth_kind is AuthKind.BEARER
        assert token.scope == "repository:team/app:pull"
        response = get_manifest(target.url, target.registry_ca_pem, token, "team/app")
        assert response.status_code == 200
        assert response.headers["Docker-Content-Digest"] == google_fresh.app_digest

    async def test_token_is_scoped_to_one_repository(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """The registry token grants pull on the asked repository and nothing else."""
        target = gcr(google_fresh)
        token = await make(config_for(google_fresh)).mint(
            target, key(google_fresh, READER), "team/app"
        )
        assert granted(token) == [("team/app", ("pull",))]
        other = get_manifest(target.url, target.registry_ca_pem, token, "team/other")
        assert other.status_code == 401

    async def test_assertion_follows_googles_rules(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """The assertion names the account, the read-only scope, the token URI, and 5 minutes."""
        await make(config_for(google_fresh)).mint(
            gcr(google_fresh), key(google_fresh, READER), "team/app"
        )
        claims = google_fresh.oauth.last_claims
        assert claims["iss"] == READER
        assert claims["scope"] == READ_ONLY_SCOPE
        assert claims["aud"] == google_fresh.oauth.token_uri
        assert claims["exp"] - claims["iat"] == 300

    async def test_access_token_never_leaves(self, make: Make, google_fresh: GoogleWorld) -> None:
        """What the broker hands out is the registry token, not Google's access token."""
        token = await make(config_for(google_fresh)).mint(
            gcr(google_fresh), key(google_fresh, READER), "team/app"
        )
        assert google_fresh.oauth.owner(token.token.reveal()) is None
        (realm_call,) = google_fresh.realm.seen("/v2/token")
        assert realm_call.keys == ("scope", "service")


class TestSsrf:
    async def test_token_uri_outside_allowed_hosts_is_refused(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """With the default config (Google's hosts only) a key naming another host dials nothing."""
        with pytest.raises(InvalidRegistry, match="not an allowed token endpoint"):
            await make().mint(gcr(google_fresh), key(google_fresh, READER), "team/app")
        assert google_fresh.oauth.seen() == []

    async def test_realm_on_another_host_is_refused(
        self, make: Make, google_fresh: GoogleWorld, tmp_path: Path, cloud_ca: TestCA
    ) -> None:
        """A registry whose realm is on another host never receives the access token there."""
        tokens = RegistryTokens(cloud_ca, service="elsewhere", issuer="elsewhere")
        realm = google_fresh.realm.realm.replace("127.0.0.1", "localhost")
        registry = RealmRegistry(tmp_path / "elsewhere", cloud_ca, realm=realm, tokens=tokens)
        registry.start()
        try:
            target = record(RegistryKind.GCR, registry.host, ca_pem=registry.ca_pem)
            with pytest.raises(UpstreamProtocolError, match="realm on another host"):
                await make(config_for(google_fresh)).mint(
                    target, key(google_fresh, READER), "team/app"
                )
        finally:
            registry.stop()
        assert google_fresh.realm.seen() == []

    async def test_loopback_endpoints_need_the_brokers_allowance(
        self, google_fresh: GoogleWorld
    ) -> None:
        """A minter on the broker's default policy dials no loopback OAuth host or registry."""
        minter = GoogleMinter(config_for(google_fresh))
        try:
            with pytest.raises(BrokerError, match="loopback") as caught:
                await minter.mint(gcr(google_fresh), key(google_fresh, READER), "team/app")
        finally:
            await minter.aclose()
        assert not isinstance(caught.value, RegistryUnreachable)
        assert google_fresh.oauth.seen() == []
        assert google_fresh.realm.seen() == []


class TestErrors:
    async def test_unknown_key_is_credential_rejected(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """A key Google does not know (deleted) gives CredentialRejected, without key material."""
        with pytest.raises(CredentialRejected, match="invalid_grant") as caught:
            await make(config_for(google_fresh)).mint(
                gcr(google_fresh), key(google_fresh, UNKNOWN), "team/app"
            )
        private_key = json.loads(google_fresh.keys[UNKNOWN])["private_key"]
        assert private_key.splitlines()[1] not in str(caught.value)
        assert "deleted or disabled" in str(caught.value)

    async def test_account_without_grant_probes_not_allowed(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """A valid account with no role on the repository probes not_allowed, saying why."""
        result = await make(config_for(google_fresh)).probe(
            gcr(google_fresh), key(google_fresh, OUTSIDER), "team/app"
        )
        assert result.outcome == "not_allowed"
        assert "may not pull team/app" in result.message

    async def test_unreachable_registry(self, make: Make, google_fresh: GoogleWorld) -> None:
        """Nothing listening at the registry host gives RegistryUnreachable."""
        target = record(
            RegistryKind.GCR, f"127.0.0.1:{free_port()}", ca_pem=google_fresh.registry.ca_pem
        )
        with pytest.raises(RegistryUnreachable):
            await make(config_for(google_fresh)).mint(target, key(google_fresh, READER), "team/app")

    async def test_unreachable_oauth_endpoint(self, make: Make, google_fresh: GoogleWorld) -> None:
        """Nothing listening at the token URI gives RegistryUnreachable naming that host."""
        dead = f"127.0.0.1:{free_port()}"
        key_json, _ = service_account_key(READER, f"https://{dead}/token")
        config = GoogleConfig(allowed_oauth_hosts=frozenset({dead}), timeout_seconds=2)
        with pytest.raises(RegistryUnreachable, match=dead):
            await make(config).mint(
                gcr(google_fresh), GoogleServiceAccount(Secret(key_json)), "team/app"
            )

    async def test_untrusted_registry_certificate_is_tls_failure(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """A registry certificate outside the trusted CA gives RegistryTLSFailure."""
        target = record(RegistryKind.GCR, google_fresh.registry.host)  # system trust only
        result = await make(config_for(google_fresh)).probe(
            target, key(google_fresh, READER), "team/app"
        )
        assert result.outcome == "tls_failure"

    async def test_rate_limit_carries_retry_after(
        self, make: Make, google_fresh: GoogleWorld
    ) -> None:
        """Google's 429 becomes RateLimited with its Retry-After."""
        google_fresh.oauth.fail_next(
            json_reply(429, {"error": "rate_limited"}, {"Retry-After": "7"})
        )
        with pytest.raises(RateLimited) as caught:
            await make(config_for(google_fresh)).mint(
                gcr(google_fresh), key(google_fresh, READER), "team/app"
            )
        assert caught.value.retry_after == 7


class TestProbe:
    async def test_probe_ok(self, make: Make, google_fresh: GoogleWorld) -> None:
        """A reader probes ok with the bearer scheme."""
        result = await make(config_for(google_fresh)).probe(
            gcr(google_fresh), key(google_fresh, READER), "team/app"
        )
        assert (result.outcome, result.auth_scheme) == ("ok", "bearer")
        assert "allows pull on team/app" in result.message

    async def test_probe_rate_limited(self, make: Make, google_fresh: GoogleWorld) -> None:
        """A 429 probes rate_limited and says when to retry."""
        google_fresh.oauth.fail_next(
            json_reply(429, {"error": "rate_limited"}, {"Retry-After": "7"})
        )
        result = await make(config_for(google_fresh)).probe(
            gcr(google_fresh), key(google_fresh, READER), "team/app"
        )
        assert result.outcome == "rate_limited"
