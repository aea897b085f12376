"""Minted tokens, reused while more than half their life remains; concurrent misses coalesce.

A deploy storm of N nodes asking for one image costs one upstream mint: the first miss starts
the mint as a task and every later caller for the same key awaits that task. Errors are not
cached (the next caller mints again) and reach every waiter of the failed mint. A waiter that
is cancelled does not cancel the mint the others wait for.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pullbroker_service.domain.model import MintedToken

CacheKey = tuple[str, int, str]
"""(registry id, credential version, scope): a rotation changes the version, so the key."""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Entry:
    token: MintedToken
    fresh_until: datetime


@dataclass
class _Flight:
    task: asyncio.Future[MintedToken]
    stale: bool = field(default=False)  # its registry was invalidated: do not keep the result


class TokenCache:
    """Bounded LRU of minted tokens with one in-flight mint per key."""

    def __init__(self, *, max_entries: int = 10_000, clock: Clock = utc_now) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._inflight: dict[CacheKey, _Flight] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(
        self,
        key: CacheKey,
        mint: Callable[[], Awaitable[MintedToken]],
        *,
        force_refresh: bool = False,
    ) -> tuple[MintedToken, bool]:
        """The token for `key` and whether it came from the cache.

        force_refresh skips the cached token (the registry rejected it) but still joins a
        mint already in flight, which is by definition newer.
        """
        if not force_refresh:
            entry = self._entries.get(key)
            if entry is not None:
                if self._clock() < entry.fresh_until:
                    self._entries.move_to_end(key)
                    return entry.token, True
                del self._entries[key]
        flight = self._inflight.get(key)
        if flight is None:
            flight = self._start(key, mint)
        return await asyncio.shield(flight.task), False

    def invalidate_registry(self, registry_id: str) -> None:
        """Forget every token of a registry (rotation, deletion, changed settings)."""
        for key in [k for k in self._entries if k[0] == registry_id]:
            del self._entries[key]
        for key in [k for k in self._inflight if k[0] == registry_id]:
            self._inflight.pop(key).stale = True

    def clear(self) -> None:
        self._entries.clear()
        for flight in self._inflight.values():
            flight.stale = True
        self._inflight.clear()

    def _start(self, key: CacheKey, mint: Callable[[], Awaitable[MintedToken]]) -> _Flight:
        flight = _Flight(asyncio.ensure_future(mint()))
        self._inflight[key] = flight
        flight.task.add_done_callback(lambda _: self._settle(key, flight))
        return flight

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
        if fresh_until <= now:
            return
        self._entries[key] = _Entry(token, fresh_until)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
