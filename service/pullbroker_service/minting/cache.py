"""Minted tokens, reused while more than half their life remains; concurrent misses coalesce.

A deploy storm of N nodes asking for one image costs one upstream mint: the first miss starts
the mint as a task and every later caller for the same key awaits that task. Errors are not
cached (the next caller mints again) and reach every waiter of the failed mint.

A mint belongs to its waiters: one waiter that gives up does not cancel it for the others, but
when the last one leaves the mint is cancelled, and with it the upstream connection. A mint
also has a deadline of its own (`mint_deadline`): the HTTP client's timeout is per read, so a
token endpoint dripping a byte at a time would otherwise hold it open for ever.

The cache is bounded by bytes as well as entries: a token's size is whatever the registry
chose to send (capped by TOKEN_BODY_LIMIT in the client), and 10,000 entries of 1 MiB would
be 10 GiB. The least recently used entries go first.

With metrics (infra/metrics.py), each lookup counts as a hit, a miss (it starts a mint) or a
coalesced wait (it joins one in flight), and each mint's time and failure reason are
recorded by registry kind: every mint, for tokens and runtime logins, passes here.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pullbroker_service.config.token_cache import TokenCacheConfig
from pullbroker_service.domain.errors import RegistryUnreachable
from pullbroker_service.domain.model import MintedToken
from pullbroker_service.infra.metrics import NO_KIND, BrokerMetrics

CacheKey = tuple[str, int, str]
"""(registry id, credential version, scope): a rotation changes the version, so the key."""

Clock = Callable[[], datetime]

ENTRY_OVERHEAD = 512
"""Bytes counted per entry beside its strings: the key, the entry and MintedToken objects."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def token_size(token: MintedToken) -> int:
    """The bytes an entry holding `token` is counted for."""
    strings = [token.token.reveal(), token.username, token.scope, token.repository]
    strings += [*token.extra.keys(), *token.extra.values()]
    return ENTRY_OVERHEAD + sum(len(s) for s in strings)


@dataclass
class _Entry:
    token: MintedToken
    fresh_until: datetime
    size: int


@dataclass
class _Flight:
    task: asyncio.Future[MintedToken]
    waiters: int = 0
    stale: bool = field(default=False)  # its registry was invalidated: do not keep the result


class TokenCache:
    """Bounded LRU of minted tokens with one in-flight mint per key."""

    def __init__(
        self,
        *,
        max_entries: int = TokenCacheConfig.max_entries,
        max_bytes: int = TokenCacheConfig.max_bytes,
        mint_deadline: float = TokenCacheConfig.mint_deadline_seconds,
        clock: Clock = utc_now,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or mint_deadline <= 0:
            raise ValueError("max_entries, max_bytes and mint_deadline must be positive")
        self._max = max_entries
        self._max_bytes = max_bytes
        self._deadline = mint_deadline
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0
        self._inflight: dict[CacheKey, _Flight] = {}
        self._metrics = metrics
        if metrics is not None:
            metrics.watch_cache(lambda: len(self._entries), lambda: self._bytes)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The bytes the cached entries are counted for (see `token_size`)."""
        return self._bytes

    @property
    def mints_in_flight(self) -> int:
        return len(self._inflight)

    async def get(
        self,
        key: CacheKey,
        mint: Callable[[], Awaitable[MintedToken]],
        *,
        force_refresh: bool = False,
        kind: str = NO_KIND,
    ) -> tuple[MintedToken, bool]:
        """The token for `key` and whether it came from the cache.

        force_refresh skips the cached token (the registry rejected it) but still joins a
        mint already in flight, which is by definition newer. `kind` (the registry's) labels
        the mint's metrics.
        """
        metrics = self._metrics
        if not force_refresh:
            entry = self._entries.get(key)
            if entry is not None:
                if self._clock() < entry.fresh_until:
                    self._entries.move_to_end(key)
                    if metrics is not None:
                        metrics.cache_hit.inc()
                    return entry.token, True
                self._drop(key)
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._start(key, mint, kind)
            if metrics is not None:
                metrics.cache_miss.inc()
        elif metrics is not None:
            metrics.cache_coalesced.inc()
        return await self._wait(key, flight), False

    def invalidate_registry(self, registry_id: str) -> None:
        """Forget every token of a registry (rotation, deletion, changed settings)."""
        for key in [k for k in self._entries if k[0] == registry_id]:
            self._drop(key)
        for key in [k for k in self._inflight if k[0] == registry_id]:
            self._inflight.pop(key).stale = True

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        for flight in self._inflight.values():
            flight.stale = True
        self._inflight.clear()

    def _start(
        self, key: CacheKey, mint: Callable[[], Awaitable[MintedToken]], kind: str
    ) -> _Flight:
        flight = _Flight(asyncio.ensure_future(self._bounded(mint, kind)))
        self._inflight[key] = flight
        flight.task.add_done_callback(lambda _: self._settle(key, flight))
        return flight

    async def _bounded(self, mint: Callable[[], Awaitable[MintedToken]], kind: str) -> MintedToken:
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(self._deadline):
                    token = await mint()
            except TimeoutError:
                raise RegistryUnreachable(
                    f"minting a token took longer than {self._deadline:g} s (the registry or "
                    "its token endpoint answers too slowly): gave up; retry later"
                ) from None
        except Exception as exc:
            if self._metrics is not None:
                self._metrics.mint_observed(kind, time.monotonic() - started, exc)
            raise
        if self._metrics is not None:
            self._metrics.mint_observed(kind, time.monotonic() - started, None)
        return token

    async def _wait(self, key: CacheKey, flight: _Flight) -> MintedToken:
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Nobody is left to hand the token to: stop reading from upstream. Removed
                # now, so a caller arriving before the task has unwound starts a fresh mint.
                if self._inflight.get(key) is flight:
                    del self._inflight[key]
                flight.task.cancel()

    def _settle(self, key: CacheKey, flight: _Flight) -> None:
        if self._inflight.get(key) is flight:
            del self._inflight[key]
        task = flight.task
        if task.cancelled():
            return
        if task.exception() is not None:  # also marks the exception as retrieved
            return
        if not flight.stale:
            self._store(key, task.result())

    def _store(self, key: CacheKey, token: MintedToken) -> None:
        lifetime = token.expires_at - token.issued_at
        if lifetime.total_seconds() <= 0:
            return
        # Half-life from both ends: the registry's own clock (expires_at) and ours (now), so a
        # skewed registry clock cannot make us serve a token past its expiry.
        now = self._clock()
        fresh_until = min(now + lifetime / 2, token.expires_at - lifetime / 2)
        size = token_size(token)
        if fresh_until <= now or size > self._max_bytes:
            return
        self._drop(key)
        self._entries[key] = _Entry(token, fresh_until, size)
        self._bytes += size
        while len(self._entries) > self._max or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
