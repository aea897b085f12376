"""Back-off after a registry says "slow down", so a deploy storm does not keep hammering it.

Two signals start a back-off for one (registry host, account):

- a 429 from the registry or its token endpoint: for its Retry-After (delta-seconds or an
  HTTP date), or DEFAULT_DELAY when it gives none;
- Docker Hub's pull quota headers, `ratelimit-limit: 100;w=21600` and
  `ratelimit-remaining: 0;w=21600` (the window `w` in seconds): with nothing remaining,
  until the window has passed, since that is the only bound the registry gives.

While a back-off runs, `check` fails at once with RateLimited and the seconds still to wait,
so nothing reaches the registry; cached tokens are still served (the cache sits in front).
The account is part of the key because Docker Hub counts authenticated pulls per account:
one exhausted credential must not stop another's. Delays are capped at MAX_DELAY.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from pullbroker_service.domain.errors import RateLimited

DEFAULT_DELAY = 30.0
"""Seconds to hold off after a 429 without Retry-After."""
MAX_DELAY = 6 * 3600.0
"""No registry answer makes the broker go quiet for longer (Docker Hub's window is 6 h)."""
_MAX_KEYS = 10_000

_QUOTA = re.compile(r"^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+)\s*)?(?:;.*)?$")

BackoffKey = tuple[str, str]
"""(registry host, account username or "" for anonymous)."""

log = structlog.get_logger()


@dataclass(frozen=True)
class Quota:
    """A pull quota as a registry announced it; any part may be unknown (None)."""

    limit: int | None
    remaining: int | None
    window_seconds: int | None

    def describe(self) -> str:
        left = "?" if self.remaining is None else str(self.remaining)
        total = "?" if self.limit is None else str(self.limit)
        window = f" per {self.window_seconds} s" if self.window_seconds else ""
        return f"{left} of {total} pulls left{window}"


def parse_quota(headers: Mapping[str, str]) -> Quota | None:
    """The quota in `ratelimit-limit`/`ratelimit-remaining` headers; None when absent or bad."""
    limit = _quota_value(headers.get("ratelimit-limit"))
    remaining = _quota_value(headers.get("ratelimit-remaining"))
    if limit is None and remaining is None:
        return None
    window = (remaining or limit or (None, None))[1]
    return Quota(
        limit=limit[0] if limit else None,
        remaining=remaining[0] if remaining else None,
        window_seconds=window,
    )


def _quota_value(text: str | None) -> tuple[int, int | None] | None:
    match = _QUOTA.match(text or "")
    if match is None:
        return None
    window = match.group(2)
    return int(match.group(1)), int(window) if window else None


@dataclass
class _Hold:
    until: float
    reason: str


class UpstreamBackoff:
    """Remembers, per (host, account), until when the broker must not call the registry."""

    def __init__(
        self,
        *,
        default_delay: float = DEFAULT_DELAY,
        max_delay: float = MAX_DELAY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = default_delay
        self._max = max_delay
        self._monotonic = monotonic
        self._holds: dict[BackoffKey, _Hold] = {}

    def remaining(self, key: BackoffKey) -> float:
        """Seconds left in the back-off of `key` (0 when none)."""
        hold = self._holds.get(key)
        if hold is None:
            return 0.0
        left = hold.until - self._monotonic()
        if left <= 0:
            del self._holds[key]
            return 0.0
        return left

    def in_force(self) -> int:
        """How many (host, account) pairs are backing off now (a metric, read per scrape)."""
        now = self._monotonic()
        return sum(1 for hold in list(self._holds.values()) if hold.until > now)

    def check(self, key: BackoffKey, label: str) -> None:
        """RateLimited with the seconds left while `key` is backing off; else nothing."""
        left = self.remaining(key)
        if left > 0:
            wait = math.ceil(left)
            raise RateLimited(
                f"registry {key[0]} {self._holds[key].reason} (registry {label}): pullbroker "
                f"is not calling it for another {wait} s; retry after that",
                retry_after=wait,
            )

    def rate_limited(self, key: BackoffKey, retry_after: float | None) -> int:
        """Note a 429; return the whole seconds the caller should wait."""
        delay = self._default if retry_after is None else retry_after
        return self._hold(key, delay, "answered 429 Too Many Requests")

    def observe(self, key: BackoffKey, headers: Mapping[str, str]) -> Quota | None:
        """Read quota headers from a registry answer; an exhausted quota starts a back-off."""
        quota = parse_quota(headers)
        if quota is None:
            return None
        log.info(
            "registry_rate_limit_seen",
            host=key[0],
            limit=quota.limit,
            remaining=quota.remaining,
            window_seconds=quota.window_seconds,
        )
        if quota.remaining == 0:
            delay = float(quota.window_seconds or self._default)
            self._hold(key, delay, f"reports its pull quota used up ({quota.describe()})")
        return quota

    def _hold(self, key: BackoffKey, delay: float, reason: str) -> int:
        wait = math.ceil(min(max(delay, 1.0), self._max))
        until = self._monotonic() + wait
        current = self._holds.get(key)
        if current is None or current.until < until:
            self._holds[key] = _Hold(until, reason)
        if len(self._holds) > _MAX_KEYS:
            self._prune()
        log.warning("registry_backoff_started", host=key[0], seconds=wait, reason=reason)
        return wait

    def _prune(self) -> None:
        now = self._monotonic()
        for key in [k for k, hold in self._holds.items() if hold.until <= now]:
            del self._holds[key]
