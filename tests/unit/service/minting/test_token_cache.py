"""The token cache: half-life reuse, coalesced misses, uncached errors, invalidation, LRU bound."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.domain.errors import CredentialRejected
from pullbroker_service.domain.model import AuthKind, MintedToken
from pullbroker_service.minting.cache import CacheKey, TokenCache

T0 = datetime(2025, 1, 1, tzinfo=UTC)
KEY: CacheKey = ("reg1", 1, "repository:team/app:pull")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class CountingMinter:
    """Mints numbered tokens valid for `life` from now; can be gated and made to fail."""

    def __init__(self, clock: Clock, life: timedelta = timedelta(seconds=300)) -> None:
        self.clock = clock
        self.life = life
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self) -> MintedToken:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        now = self.clock()
        return MintedToken(
            AuthKind.BEARER, "", Secret(f"tok-{self.calls}"), KEY[2], now, now + self.life
        )


@pytest.fixture
def clock() -> Clock:
    return Clock()


class TestReuse:
    """A token is served while more than half its life remains, then re-minted."""

    async def test_half_life(self, clock: Clock) -> None:
        """Reused at 149 s of a 300 s token, re-minted at 151 s."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        first, hit = await cache.get(KEY, mint)
        assert (first.token.reveal(), hit) == ("tok-1", False)
        clock.now = T0 + timedelta(seconds=149)
        again, hit = await cache.get(KEY, mint)
        assert (again.token.reveal(), hit) == ("tok-1", True)
        clock.now = T0 + timedelta(seconds=151)
        fresh, hit = await cache.get(KEY, mint)
        assert (fresh.token.reveal(), hit, mint.calls) == ("tok-2", False, 2)

    async def test_keys_are_separate(self, clock: Clock) -> None:
        """Another scope or credential version is another entry."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        await cache.get(KEY, mint)
        await cache.get(("reg1", 2, KEY[2]), mint)
        await cache.get(("reg1", 1, "repository:team/other:pull"), mint)
        assert mint.calls == 3

    async def test_force_refresh_bypasses_the_entry(self, clock: Clock) -> None:
        """force_refresh mints anew and the new token replaces the cached one."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        await cache.get(KEY, mint)
        refreshed, hit = await cache.get(KEY, mint, force_refresh=True)
        after, _ = await cache.get(KEY, mint)
        assert (refreshed.token.reveal(), hit, after.token.reveal()) == ("tok-2", False, "tok-2")

    async def test_skewed_issuer_clock_is_not_trusted(self, clock: Clock) -> None:
        """A token issued 10 minutes in the past (registry clock behind) is not cached."""
        cache = TokenCache(clock=clock)

        async def skewed() -> MintedToken:
            past = clock() - timedelta(minutes=10)
            return MintedToken(
                AuthKind.BEARER, "", Secret("t"), "s", past, past + timedelta(minutes=15)
            )

        await cache.get(KEY, skewed)
        _, hit = await cache.get(KEY, skewed)
        assert not hit, "only 5 of 15 minutes remain: less than half"
        assert len(cache) == 0


class TestCoalescing:
    """Concurrent misses for one key share one mint."""

    async def test_64_concurrent_misses_mint_once(self, clock: Clock) -> None:
        """64 callers arriving while the first mint is in flight cause exactly one mint."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        mint.gate = asyncio.Event()
        tasks = [asyncio.create_task(cache.get(KEY, mint)) for _ in range(64)]
        await asyncio.sleep(0)
        mint.gate.set()
        results = await asyncio.gather(*tasks)
        assert mint.calls == 1
        assert {token.token.reveal() for token, _ in results} == {"tok-1"}

    async def test_force_refresh_joins_the_flight(self, clock: Clock) -> None:
        """force_refresh during an in-flight mint waits for it instead of starting another."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        mint.gate = asyncio.Event()
        first = asyncio.create_task(cache.get(KEY, mint))
        await asyncio.sleep(0)
        forced = asyncio.create_task(cache.get(KEY, mint, force_refresh=True))
        await asyncio.sleep(0)
        mint.gate.set()
        await asyncio.gather(first, forced)
        assert mint.calls == 1

    async def test_error_reaches_every_waiter_and_is_not_cached(self, clock: Clock) -> None:
        """A failed shared mint raises in all waiters; the next call mints again."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        mint.gate = asyncio.Event()
        mint.error = CredentialRejected("rejected")
        tasks = [asyncio.create_task(cache.get(KEY, mint)) for _ in range(8)]
        await asyncio.sleep(0)
        mint.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, CredentialRejected) for r in results)
        assert mint.calls == 1
        mint.gate, mint.error = None, None
        token, hit = await cache.get(KEY, mint)
        assert (token.token.reveal(), hit, mint.calls) == ("tok-2", False, 2)

    async def test_cancelled_waiter_does_not_cancel_the_mint(self, clock: Clock) -> None:
        """The first caller giving up leaves the shared mint running for the others."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        mint.gate = asyncio.Event()
        first = asyncio.create_task(cache.get(KEY, mint))
        second = asyncio.create_task(cache.get(KEY, mint))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.sleep(0)
        mint.gate.set()
        token, _ = await second
        assert first.cancelled()
        assert token.token.reveal() == "tok-1"
        assert (await cache.get(KEY, mint))[1], "the result was cached"


class TestInvalidation:
    """Invalidating a registry forgets its tokens, including one still being minted."""

    async def test_invalidate_registry(self, clock: Clock) -> None:
        """Tokens of the registry are dropped; other registries keep theirs."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        other: CacheKey = ("reg2", 1, KEY[2])
        await cache.get(KEY, mint)
        await cache.get(other, mint)
        cache.invalidate_registry("reg1")
        assert not (await cache.get(KEY, mint))[1]
        assert (await cache.get(other, mint))[1]

    async def test_in_flight_result_is_not_kept(self, clock: Clock) -> None:
        """A mint started before invalidation is delivered to its waiters but not cached."""
        cache, mint = TokenCache(clock=clock), CountingMinter(clock)
        mint.gate = asyncio.Event()
        waiting = asyncio.create_task(cache.get(KEY, mint))
        await asyncio.sleep(0)
        cache.invalidate_registry("reg1")
        mint.gate.set()
        token, _ = await waiting
        mint.gate = None
        fresh, hit = await cache.get(KEY, mint)
        assert (token.token.reveal(), fresh.token.reveal(), hit) == ("tok-1", "tok-2", False)


class TestBound:
    """The cache holds at most max_entries, evicting the least recently used."""

    async def test_lru_eviction(self, clock: Clock) -> None:
        """With room for two, touching A then adding C evicts B."""
        cache, mint = TokenCache(max_entries=2, clock=clock), CountingMinter(clock)
        a, b, c = (("r", 1, s) for s in "abc")
        await cache.get(a, mint)
        await cache.get(b, mint)
        await cache.get(a, mint)
        await cache.get(c, mint)
        assert len(cache) == 2
        assert (await cache.get(a, mint))[1]
        assert not (await cache.get(b, mint))[1]
