"""The daemon's login cache and the logins it hands out from the broker's IssueRegistryLogin."""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import pytest
from pullbroker_client.broker import BrokerCallError, IssuedRegistryLogin
from pullbroker_client.registry.reference import parse_reference
from pullbroker_client.secret import Secret
from pullbroker_sidecar.daemon.login_cache import LoginCache, Logins, NoLogin, normalize_host

from tests.unit.sidecar.issuer import FakeClock, StubLoginIssuer

HOST = "127.0.0.1:5000"


class FailingIssuer:
    """IssueRegistryLogin that fails with one status code."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self.code = code

    async def issue_registry_login(
        self,
        image: str,
        registry: str = "",
        force_refresh: bool = False,
        service_account_token: Secret | None = None,
    ) -> IssuedRegistryLogin:
        await asyncio.sleep(0)  # a real call yields before it fails
        raise BrokerCallError(self.code, f"refused {image}")


def _logins(issuer: StubLoginIssuer, clock: FakeClock, images: list[str] | None = None) -> Logins:
    return Logins(LoginCache(issuer, clock=clock), images or [], clock=clock)


class TestLoginCache:
    async def test_login_is_reused_until_shortly_before_expiry(self) -> None:
        """Same repository (any tag): one broker call until 30 s before expiry, then another."""
        clock = FakeClock()
        issuer = StubLoginIssuer(clock, ttl=300)
        cache = LoginCache(issuer, clock=clock)
        first = await cache.get(parse_reference(f"{HOST}/team/app:v1"))
        again = await cache.get(parse_reference(f"{HOST}/team/app:v2"))
        assert first is again
        clock.now += 271
        renewed = await cache.get(parse_reference(f"{HOST}/team/app:v1"))
        assert renewed.secret.reveal() == "secret-2"
        assert len(issuer.calls) == 2

    async def test_concurrent_misses_make_one_call(self) -> None:
        """Ten requests at once for one repository: one broker call, one login."""
        clock = FakeClock()
        issuer = StubLoginIssuer(clock)
        cache = LoginCache(issuer, clock=clock)
        ref = parse_reference(f"{HOST}/team/app:v1")
        logins = await asyncio.gather(*(cache.get(ref) for _ in range(10)))
        assert len(issuer.calls) == 1
        assert {login.secret.reveal() for login in logins} == {"secret-1"}

    async def test_a_failure_reaches_every_waiter_and_is_not_cached(self) -> None:
        """A refused call fails all who waited for it; the next request asks again."""
        cache = LoginCache(FailingIssuer(grpc.StatusCode.UNAVAILABLE), clock=FakeClock())
        ref = parse_reference(f"{HOST}/team/app:v1")
        results = await asyncio.gather(*(cache.get(ref) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, BrokerCallError) for r in results)
        assert len(cache) == 0
        assert cache.broker_calls == 1


class TestPodScopedLogins:
    """A login asked for with a pod's service-account token is that pod's alone."""

    async def test_never_shared_between_pods(self) -> None:
        """Two pods asking for one image: two broker calls, each with its own pod's token."""
        issuer = StubLoginIssuer(FakeClock())
        cache = LoginCache(issuer, clock=issuer.clock)
        ref = parse_reference(f"{HOST}/team/app:v1")
        pod_a = await cache.get(ref, service_account_token=Secret("token-of-pod-a"))
        pod_b = await cache.get(ref, service_account_token=Secret("token-of-pod-b"))
        assert issuer.pod_tokens == ["token-of-pod-a", "token-of-pod-b"]
        assert pod_a.secret.reveal() != pod_b.secret.reveal()

    async def test_never_cached_for_the_same_pod_nor_for_the_node(self) -> None:
        """The same pod asking again calls again; a node-level request does not get its login."""
        issuer = StubLoginIssuer(FakeClock())
        cache = LoginCache(issuer, clock=issuer.clock)
        ref = parse_reference(f"{HOST}/team/app:v1")
        pod = await cache.get(ref, service_account_token=Secret("token-of-pod-a"))
        await cache.get(ref, service_account_token=Secret("token-of-pod-a"))
        node = await cache.get(ref)
        assert issuer.pod_tokens == ["token-of-pod-a", "token-of-pod-a", None]
        assert node.secret.reveal() != pod.secret.reveal()
        assert len(cache) == 1  # the node-level login only


class TestLogins:
    async def test_broker_login_is_handed_out_with_its_flags(self) -> None:
        """The broker's login becomes the daemon's: username, secret, expiry and flags."""
        clock = FakeClock()
        issuer = StubLoginIssuer(clock, username="AWS")
        login = await _logins(issuer, clock).for_image(f"{HOST}/team/app:v1")
        assert (login.username, login.secret, login.domain) == ("AWS", Secret("secret-1"), HOST)
        assert login.repository == "team/app"
        assert login.remaining(clock.now) == pytest.approx(300)
        assert (login.identity_token, login.passthrough) == (False, False)
        assert issuer.calls == [(f"{HOST}/team/app:v1", "", False)]

    @pytest.mark.parametrize(("identity_token", "passthrough"), [(True, False), (False, True)])
    async def test_identity_token_and_passthrough_are_kept(
        self, identity_token: bool, passthrough: bool
    ) -> None:
        """The flags the helpers act on survive into the daemon's login."""
        clock = FakeClock()
        issuer = StubLoginIssuer(clock, identity_token=identity_token, passthrough=passthrough)
        login = await _logins(issuer, clock).for_image(f"{HOST}/team/app:v1")
        assert (login.identity_token, login.passthrough) == (identity_token, passthrough)

    async def test_registry_without_logins_is_no_login_with_the_way_out(self) -> None:
        """FAILED_PRECONDITION from the broker: no_login, carrying what to run instead."""
        clock = FakeClock()
        with pytest.raises(NoLogin, match="--dest docker-daemon") as caught:
            await _logins(StubLoginIssuer(clock, refuse=True), clock).for_image(f"{HOST}/a:v1")
        assert caught.value.code == "no_login"

    async def test_an_old_broker_says_to_upgrade(self) -> None:
        """UNIMPLEMENTED (a broker without IssueRegistryLogin): no_login saying so."""
        logins = Logins(LoginCache(FailingIssuer(grpc.StatusCode.UNIMPLEMENTED)))
        with pytest.raises(NoLogin, match="upgrade it") as caught:
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
        logins = Logins(LoginCache(FailingIssuer(code), clock=FakeClock()))
        with pytest.raises(NoLogin) as caught:
            await logins.for_image(f"{HOST}/team/app:v1")
        assert caught.value.code == expected

    async def test_host_login_comes_from_a_declared_image(self) -> None:
        """`login` for a registry asks the broker about an image declared for it."""
        clock = FakeClock()
        issuer = StubLoginIssuer(clock)
        logins = _logins(issuer, clock, [f"{HOST}/team/app:v1"])
        login = await logins.for_host(f"https://{HOST}/")
        assert login.username == "robot"
        assert issuer.calls == [(f"{HOST}/team/app:v1", "", False)]
        assert logins.registries() == {HOST: "robot"}

    async def test_undeclared_registry_is_not_found(self) -> None:
        """No image declared for a registry: not_found, and the broker is not asked."""
        clock = FakeClock()
        issuer = StubLoginIssuer(clock)
        logins = _logins(issuer, clock, [f"{HOST}/team/app:v1"])
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
    """The stub issuer's logins carry an aware UTC expiry (as the broker client's do)."""
    login = asyncio.run(StubLoginIssuer(FakeClock()).issue_registry_login("x"))
    assert login.expires_at.tzinfo is dt.UTC
