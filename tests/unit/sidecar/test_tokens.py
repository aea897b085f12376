"""The broker-backed Authorizer: memory-only tokens, renewal before expiry, forced refresh."""

from __future__ import annotations

import asyncio

from pullbroker_client.secret import Secret
from pullbroker_sidecar.tokens import BrokerAuthorizer

from tests.unit.sidecar.issuer import FakeClock, StubIssuer


def _reveal(value: Secret | None) -> str | None:
    return None if value is None else value.reveal()


class TestBrokerAuthorizer:
    async def test_reuses_the_token_until_shortly_before_expiry(self) -> None:
        """One broker call serves many requests; a new one is asked for 30 s before expiry."""
        clock = FakeClock()
        issuer = StubIssuer(clock)
        auth = BrokerAuthorizer(issuer, "127.0.0.1:5000/team/app:v1", clock=clock)
        assert _reveal(await auth.authorization(False)) == "Bearer tok-1"
        clock.now += 269
        assert _reveal(await auth.authorization(False)) == "Bearer tok-1"
        clock.now += 2
        assert _reveal(await auth.authorization(False)) == "Bearer tok-2"
        assert [c[2] for c in issuer.calls] == [False, False]

    async def test_short_lived_tokens_renew_at_three_quarters(self) -> None:
        """A 20 s token is renewed after 15 s, not on every request."""
        clock = FakeClock()
        issuer = StubIssuer(clock, ttl=20)
        auth = BrokerAuthorizer(issuer, "i", clock=clock)
        await auth.authorization(False)
        clock.now += 14
        await auth.authorization(False)
        assert len(issuer.calls) == 1
        clock.now += 2
        await auth.authorization(False)
        assert len(issuer.calls) == 2

    async def test_refresh_forces_a_new_token(self) -> None:
        """refresh=True (the registry said 401) asks the broker with force_refresh."""
        clock = FakeClock()
        issuer = StubIssuer(clock)
        auth = BrokerAuthorizer(issuer, "img", registry="acme", clock=clock)
        await auth.authorization(False)
        assert _reveal(await auth.authorization(True)) == "Bearer tok-2"
        assert issuer.calls == [("img", "acme", False), ("img", "acme", True)]

    async def test_concurrent_refreshes_cost_one_call(self) -> None:
        """Downloads rejected together share one forced refresh."""
        clock = FakeClock()
        issuer = StubIssuer(clock)
        auth = BrokerAuthorizer(issuer, "img", clock=clock)
        await auth.authorization(False)
        values = await asyncio.gather(*(auth.authorization(True) for _ in range(4)))
        assert {_reveal(v) for v in values} == {"Bearer tok-2"}
        assert [c[2] for c in issuer.calls] == [False, True]

    async def test_basic_and_anonymous_kinds(self) -> None:
        """Basic pass-through builds base64(user:token); anonymous sends no header."""
        clock = FakeClock()
        basic = BrokerAuthorizer(StubIssuer(clock, kind="basic"), "i", clock=clock)
        assert _reveal(await basic.authorization(False)) == "Basic cm9ib3Q6dG9rLTE="
        anonymous = BrokerAuthorizer(StubIssuer(clock, kind="anonymous"), "i", clock=clock)
        assert await anonymous.authorization(False) is None

    async def test_grant_holds_no_token(self) -> None:
        """The grant (where to pull) carries registry details and never the token."""
        clock = FakeClock()
        auth = BrokerAuthorizer(StubIssuer(clock), "i", clock=clock)
        grant = await auth.grant()
        assert grant.registry_url == "https://127.0.0.1:5000"
        assert grant.repository == "team/app"
        assert "tok-" not in repr(grant)
        assert "tok-" not in repr(auth.__dict__)
