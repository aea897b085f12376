"""The daemon's token cache and the logins it makes of the broker's tokens."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from pullbroker_client.broker import BrokerCallError, IssuedPullToken
from pullbroker_client.registry.reference import parse_reference
from pullbroker_client.secret import Secret
from pullbroker_sidecar.daemon.logins import Logins, NoLogin, TokenCache, normalize_host

from tests.unit.sidecar.issuer import FakeClock, StubIssuer

HOST = "127.0.0.1:5000"


class FailingIssuer:
    """IssuePullToken that fails with one status code."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def issue_pull_token(
        self, image: str, registry: str | None = None, force_refresh: bool = False
    ) -> IssuedPullToken:
        await asyncio.sleep(0)  # a real call yields before it fails
        raise BrokerCallError(self.code, f"refused {image}")


class TestTokenCache:
    async def test_token_is_reused_until_shortly_before_expiry(self) -> None:
        """Same repository (any tag): one broker call until 30 s before expiry, then another."""
        clock = FakeClock()
        issuer = StubIssuer(clock, ttl=300)
        cache = TokenCache(issuer, clock=clock)
        first = await cache.get(parse_reference(f"{HOST}/team/app:v1"))
        again = await cache.get(parse_reference(f"{HOST}/team/app:v2"))
        assert first is again
        clock.now += 271
        renewed = await cache.get(parse_reference(f"{HOST}/team/app:v1"))
        assert renewed.token.reveal() == "tok-2"
        assert len(issuer.calls) == 2

    async def test_concurrent_misses_make_one_call(self) -> None:
        """Ten requests at once for one repository: one broker call, one token."""
        clock = FakeClock()
        issuer = StubIssuer(clock)
        cache = TokenCache(issuer, clock=clock)
        ref = parse_reference(f"{HOST}/team/app:v1")
        tokens = await asyncio.gather(*(cache.get(ref) for _ in range(10)))
        assert len(issuer.calls) == 1
        assert {t.token.reveal() for t in tokens} == {"tok-1"}

    async def test_a_failure_reaches_every_waiter_and_is_not_cached(self) -> None:
        """A refused call fails all who waited for it; the next request asks again."""
        cache = TokenCache(FailingIssuer(grpc.StatusCode.UNAVAILABLE), clock=FakeClock())
        ref = parse_reference(f"{HOST}/team/app:v1")
        results = await asyncio.gather(*(cache.get(ref) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, BrokerCallError) for r in results)
        assert len(cache) == 0
        assert cache.broker_calls == 1


class TestLogins:
    async def test_basic_token_is_a_login(self) -> None:
        """A Basic token (ECR, pass-through) is handed out as username and secret."""
        clock = FakeClock()
        logins = Logins(TokenCache(StubIssuer(clock, kind="basic"), clock=clock), clock=clock)
        login = await logins.for_image(f"{HOST}/team/app:v1")
        assert (login.username, login.secret, login.domain) == ("robot", Secret("tok-1"), HOST)
        assert login.repository == "team/app"
        assert login.remaining(clock.now) == pytest.approx(300)

    async def test_bearer_token_is_no_login(self) -> None:
        """A repository-scoped bearer token is never handed to a runtime as a login."""
        clock = FakeClock()
        logins = Logins(TokenCache(StubIssuer(clock, kind="bearer"), clock=clock), clock=clock)
        with pytest.raises(NoLogin, match="--dest docker-daemon") as caught:
            await logins.for_image(f"{HOST}/team/app:v1")
        assert caught.value.code == "no_login"

    @pytest.mark.parametrize(
        ("code", "expected"),
        [
            (grpc.StatusCode.PERMISSION_DENIED, "denied"),
            (grpc.StatusCode.NOT_FOUND, "not_found"),
            (grpc.StatusCode.UNAVAILABLE, "unavailable"),
            (grpc.StatusCode.INVALID_ARGUMENT, "bad_request"),
        ],
    )
    async def test_broker_refusals_become_protocol_codes(
        self, code: grpc.StatusCode, expected: str
    ) -> None:
        """Each broker status maps to the code the helpers act on."""
        logins = Logins(TokenCache(FailingIssuer(code), clock=FakeClock()))
        with pytest.raises(NoLogin) as caught:
            await logins.for_image(f"{HOST}/team/app:v1")
        assert caught.value.code == expected

    async def test_host_login_comes_from_a_declared_image(self) -> None:
        """`login` for a registry asks the broker about an image declared for it."""
        clock = FakeClock()
        issuer = StubIssuer(clock, kind="basic")
        logins = Logins(TokenCache(issuer, clock=clock), [f"{HOST}/team/app:v1"], clock=clock)
        login = await logins.for_host(f"https://{HOST}/")
        assert login.username == "robot"
        assert issuer.calls == [(f"{HOST}/team/app:v1", None, False)]
        assert logins.registries() == {HOST: "robot"}

    async def test_undeclared_registry_is_not_found(self) -> None:
        """No image declared for a registry: not_found, and the broker is not asked."""
        clock = FakeClock()
        issuer = StubIssuer(clock, kind="basic")
        logins = Logins(TokenCache(issuer, clock=clock), [f"{HOST}/team/app:v1"], clock=clock)
        with pytest.raises(NoLogin) as caught:
            await logins.for_host("registry.example.com")
        assert caught.value.code == "not_found"
        assert issuer.calls == []


class TestNormalizeHost:
    @pytest.mark.parametrize(
        ("server", "host"),
        [
            ("https://index.docker.io/v1/", "docker.io"),
            ("registry-1.docker.io", "docker.io"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("https://Registry.Example.com/v2/", "registry.example.com"),
            ("http://r.example:8080\n", "r.example:8080"),
        ],
    )
    def test_server_urls_become_hosts(self, server: str, host: str) -> None:
        """Scheme, path, case and Docker Hub's aliases are normalised away."""
        assert normalize_host(server) == host


def test_stub_expiry_is_utc() -> None:
    """The stub issuer's tokens carry an aware UTC expiry (as the broker client's do)."""
    clock = FakeClock()
    token = asyncio.run(StubIssuer(clock).issue_pull_token("x"))
    assert token.expires_at.tzinfo is dt.UTC
