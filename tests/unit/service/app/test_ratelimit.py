"""Per-identity token buckets for IssuePullToken and TestConnection."""

from __future__ import annotations

import grpc
import pytest
from pullbroker_service.api.status import RETRY_AFTER_KEY, rpc_status
from pullbroker_service.app.ratelimit import Limit, LimitKind, RateLimiter
from pullbroker_service.domain.errors import QuotaExceeded

TOKENS = LimitKind.ISSUE_PULL_TOKEN
TESTS = LimitKind.TEST_CONNECTION


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> RateLimiter:
    return RateLimiter({TOKENS: Limit(per_second=2.0, burst=3), TESTS: Limit(0.5, 1)}, clock=clock)


class TestBuckets:
    """A burst is allowed, then calls refill at the rate; each identity has its own bucket."""

    def test_burst_then_refused_with_retry_delay(self, limiter: RateLimiter) -> None:
        """After `burst` calls the next one waits 1/rate seconds."""
        for _ in range(3):
            limiter.check("node-a", TOKENS)
        with pytest.raises(QuotaExceeded, match="node-a is over its limit") as caught:
            limiter.check("node-a", TOKENS)
        assert caught.value.retry_after == pytest.approx(0.5)

    def test_refills_over_time(self, limiter: RateLimiter, clock: Clock) -> None:
        """Half a second at 2/s makes one call possible again, and only one."""
        for _ in range(3):
            limiter.check("node-a", TOKENS)
        clock.now += 0.5
        limiter.check("node-a", TOKENS)
        with pytest.raises(QuotaExceeded):
            limiter.check("node-a", TOKENS)

    def test_identities_are_independent(self, limiter: RateLimiter) -> None:
        """One identity's exhausted bucket does not refuse another identity."""
        for _ in range(3):
            limiter.check("node-a", TOKENS)
        limiter.check("node-b", TOKENS)

    def test_kinds_are_independent(self, limiter: RateLimiter) -> None:
        """TestConnection has its own, slower limit."""
        limiter.check("admin", TESTS)
        with pytest.raises(QuotaExceeded, match=r"0\.5 .*TestConnection|30/min TestConnection"):
            limiter.check("admin", TESTS)
        limiter.check("admin", TOKENS)

    def test_sweep_keeps_active_callers_limited(self, clock: Clock) -> None:
        """Past max_identities, refilled buckets are dropped but an empty one is kept."""
        limiter = RateLimiter({TOKENS: Limit(1.0, 1)}, clock=clock, max_identities=2)
        limiter.check("idle", TOKENS)
        clock.now += 1.0  # "idle" has refilled: the same as never having called
        limiter.check("busy", TOKENS)
        limiter.check("third", TOKENS)  # the table is full: "idle" is swept, "busy" stays
        with pytest.raises(QuotaExceeded):
            limiter.check("busy", TOKENS)


class TestStatus:
    """QuotaExceeded is RESOURCE_EXHAUSTED with a retry-after the client can read."""

    def test_status_and_retry_after(self) -> None:
        """The status carries the delay as trailing metadata."""
        status = rpc_status(QuotaExceeded("identity x is over its limit", retry_after=0.25))
        assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (RETRY_AFTER_KEY, "0.25") in status.trailing_metadata
