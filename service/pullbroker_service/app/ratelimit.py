"""Per-identity rate limits (token buckets) for the calls that cost the broker upstream work.

A bucket per (identity, kind) holds up to `burst` calls and refills at `per_second`. A call
finding it empty fails with QuotaExceeded (RESOURCE_EXHAUSTED) and the seconds until one call
is possible again, which the API sends as `retry-after`. The limit is per identity, so one
misbehaving node cannot starve the others, and a deploy storm of many nodes is bounded by
the token cache, not by this.

`check()` is on the token hot path: one dict lookup and a little arithmetic, no lock (the
event loop runs one call at a time). Buckets that have refilled are equivalent to no bucket,
so the table is swept of them when it grows past `max_identities`.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pullbroker_service.domain.errors import QuotaExceeded
from pullbroker_service.infra.metrics import BrokerMetrics


class LimitKind(enum.StrEnum):
    ISSUE_PULL_TOKEN = "IssuePullToken"  # noqa: S105 - an RPC name, not a secret
    TEST_CONNECTION = "TestConnection"


@dataclass(frozen=True)
class Limit:
    """`burst` calls at once, refilled at `per_second`."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a limit needs per_second > 0 and burst >= 1")


DEFAULT_LIMITS: Mapping[LimitKind, Limit] = {
    # A node asks once per image and again near expiry; 20/s sustained is far above that.
    LimitKind.ISSUE_PULL_TOKEN: Limit(per_second=20.0, burst=100),
    # Every test reaches the registry and its token endpoint: keep it slow.
    LimitKind.TEST_CONNECTION: Limit(per_second=0.5, burst=5),
}


class _Bucket:
    __slots__ = ("at", "level")

    def __init__(self, level: float, at: float) -> None:
        self.level = level
        self.at = at


class RateLimiter:
    """Token buckets per (identity, kind). Kinds without a limit are not limited."""

    def __init__(
        self,
        limits: Mapping[LimitKind, Limit] = DEFAULT_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_identities: int = 10_000,
        metrics: BrokerMetrics | None = None,
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._max = max_identities
        self._buckets: dict[tuple[str, LimitKind], _Bucket] = {}
        self._metrics = metrics

    def check(self, identity: str, kind: LimitKind) -> None:
        """Take one call from `identity`'s bucket for `kind`, or raise QuotaExceeded."""
        limit = self._limits.get(kind)
        if limit is None:
            return
        now = self._clock()
        key = (identity, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._sweep(now)
            bucket = self._buckets[key] = _Bucket(float(limit.burst), now)
        else:
            elapsed = max(0.0, now - bucket.at)
            bucket.level = min(float(limit.burst), bucket.level + elapsed * limit.per_second)
            bucket.at = now
        if bucket.level >= 1.0:
            bucket.level -= 1.0
            return
        wait = (1.0 - bucket.level) / limit.per_second
        if self._metrics is not None:
            self._metrics.rate_limited(kind.value)
        raise QuotaExceeded(
            f"identity {identity} is over its limit of {_rate(limit)} {kind.value} calls "
            f"(burst {limit.burst}): retry in {_seconds(wait)} s",
            retry_after=math.ceil(wait * 1000) / 1000,
        )

    def _sweep(self, now: float) -> None:
        full = [
            key
            for key, bucket in self._buckets.items()
            if bucket.level + (now - bucket.at) * self._limits[key[1]].per_second
            >= self._limits[key[1]].burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max:
            # Still full of active callers: forget them all (a fresh bucket is a full one,
            # so this errs towards letting calls through, never towards refusing them).
            self._buckets.clear()


def _rate(limit: Limit) -> str:
    if limit.per_second >= 1:
        return f"{limit.per_second:g}/s"
    return f"{limit.per_second * 60:g}/min"


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{math.ceil(value)}"
