"""429 with Retry-After, and Docker Hub's quota headers: fail fast, do not hammer upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from pullbroker_service.api.status import RETRY_AFTER_KEY, rpc_status
from pullbroker_service.domain.errors import RateLimited
from pullbroker_service.domain.model import AuthKind, RegistryKind
from pullbroker_service.minting.upstream_backoff import DEFAULT_DELAY
from structlog.testing import capture_logs

from tests.harness.certs import TestCA
from tests.integration.kinds.quota_stub import LIMIT, WINDOW, QuotaStub
from tests.integration.kinds.world import KIND_USERS, Seeded, World, build_world

pytestmark = pytest.mark.integration

DOCKER_HUB = KIND_USERS[RegistryKind.DOCKER_HUB]
GHCR = KIND_USERS[RegistryKind.GHCR]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A clock at an arbitrary start."""
    return FakeClock()


@pytest.fixture
async def timed_world(tmp_path: Path, clock: FakeClock) -> AsyncIterator[World]:
    """A broker core whose minters run on the fake clock."""
    built = build_world(tmp_path / "timed", monotonic=clock)
    try:
        yield built
    finally:
        await built.close()


class TestRetryAfter:
    """A 429 from the token endpoint holds the broker back for the Retry-After window."""

    async def test_429_then_fail_fast(self, timed_world: World, seeded: Seeded) -> None:
        """RateLimited carries Retry-After; within it nothing more reaches the token server."""
        registry, server = seeded.registry, seeded.registry.token_server
        credential = seeded.credential(DOCKER_HUB.puller)
        await timed_world.add(RegistryKind.DOCKER_HUB, registry.url, registry.ca_pem, credential)
        server.fail_next(429, retry_after=7)
        image = f"{registry.host}/team/app:v1"
        with pytest.raises(RateLimited) as first:
            await timed_world.pull_token(image)
        assert first.value.retry_after == 7
        assert server.count(status=429) == 1
        with pytest.raises(RateLimited) as second:
            await timed_world.pull_token(image)
        assert second.value.retry_after == 7  # the fake clock has not moved
        assert "not calling it for another 7 s" in str(second.value)
        probe = await timed_world.registries.test("reg", None, None, "team/app")
        assert probe.outcome == "rate_limited"
        assert len(server.requests) == 1, "the second mint and the probe stayed at home"

    async def test_status_carries_the_delay(self, timed_world: World, seeded: Seeded) -> None:
        """The gRPC status is RESOURCE_EXHAUSTED with a retry-after trailer of the delay."""
        registry = seeded.registry
        credential = seeded.credential(DOCKER_HUB.puller)
        await timed_world.add(RegistryKind.DOCKER_HUB, registry.url, registry.ca_pem, credential)
        registry.token_server.fail_next(429, retry_after=12)
        with pytest.raises(RateLimited) as info:
            await timed_world.pull_token(f"{registry.host}/team/app:v1")
        status = rpc_status(info.value)
        assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert status.trailing_metadata == ((RETRY_AFTER_KEY, "12"),)

    async def test_window_passes(
        self, timed_world: World, seeded: Seeded, clock: FakeClock
    ) -> None:
        """Once the Retry-After window has passed, the next mint goes upstream and works."""
        registry, server = seeded.registry, seeded.registry.token_server
        credential = seeded.credential(DOCKER_HUB.puller)
        await timed_world.add(RegistryKind.DOCKER_HUB, registry.url, registry.ca_pem, credential)
        server.fail_next(429, retry_after=5)
        with pytest.raises(RateLimited):
            await timed_world.pull_token(f"{registry.host}/team/app:v1")
        clock.now += 3
        with pytest.raises(RateLimited) as info:
            await timed_world.pull_token(f"{registry.host}/team/app:v1")
        assert info.value.retry_after == 2
        clock.now += 2.5
        token = await timed_world.pull_token(f"{registry.host}/team/app:v1")
        assert token.auth_kind is AuthKind.BEARER
        assert server.count(status=200) == 1

    async def test_without_retry_after(self, world: World, seeded: Seeded) -> None:
        """A 429 that names no delay holds back for the default delay."""
        registry = seeded.registry
        credential = seeded.credential(GHCR.puller)
        await world.add(RegistryKind.GHCR, registry.url, registry.ca_pem, credential)
        registry.token_server.fail_next(429)
        with pytest.raises(RateLimited) as info:
            await world.pull_token(f"{registry.host}/team/app:v1")
        assert info.value.retry_after == DEFAULT_DELAY

    async def test_other_accounts_are_not_held_back(self, world: World, seeded: Seeded) -> None:
        """The back-off is per registry and account: another credential still mints."""
        registry, server = seeded.registry, seeded.registry.token_server
        first = seeded.credential(DOCKER_HUB.puller)
        other = seeded.credential(KIND_USERS[RegistryKind.GENERIC].puller)
        # Two records for one host: globs of different specificity, so neither is ambiguous.
        await world.add(
            RegistryKind.DOCKER_HUB, registry.url, registry.ca_pem, first, name="a",
            repositories=("team/app",),
        )  # fmt: skip
        await world.add(
            RegistryKind.GENERIC, registry.url, registry.ca_pem, other, name="b",
            repositories=("team/*",),
        )  # fmt: skip
        server.fail_next(429, retry_after=60)
        with pytest.raises(RateLimited):
            await world.pull_token(f"{registry.host}/team/app:v1", "a")
        token = await world.pull_token(f"{registry.host}/team/app:v1", "b")
        assert token.auth_kind is AuthKind.BEARER
        assert [r.status for r in server.requests] == [429, 200]
        assert server.requests[-1].user == other.username


@pytest.fixture
def quota_stub(test_ca: TestCA) -> Iterator[QuotaStub]:
    """The quota-announcing fixture registry, announcing an empty quota."""
    stub = QuotaStub(test_ca, remaining=0).start()
    try:
        yield stub
    finally:
        stub.stop()


class TestQuotaHeaders:
    """Docker Hub's ratelimit-* headers are read, logged, and an empty quota holds back."""

    async def test_exhausted_quota_fails_fast(
        self, world: World, quota_stub: QuotaStub, test_ca: TestCA
    ) -> None:
        """remaining 0 is reported by the probe, then mints fail fast for the window."""
        await world.add(RegistryKind.PUBLIC, quota_stub.url, test_ca.pem, None)
        with capture_logs() as logs:
            probe = await world.registries.test("reg", None, None, "team/app")
        assert probe.outcome == "ok", probe.message
        assert f"pull quota: 0 of {LIMIT} pulls left per {WINDOW} s" in probe.message
        seen = [e for e in logs if e["event"] == "registry_rate_limit_seen"]
        assert [(e["limit"], e["remaining"], e["window_seconds"]) for e in seen] == [
            (LIMIT, 0, WINDOW)
        ]
        calls = len(quota_stub.paths)
        with pytest.raises(RateLimited) as info:
            await world.pull_token(f"{quota_stub.host}/team/app:v1")
        assert info.value.retry_after == WINDOW
        assert "pull quota used up" in str(info.value)
        assert len(quota_stub.paths) == calls

    async def test_quota_left_changes_nothing(
        self, world: World, quota_stub: QuotaStub, test_ca: TestCA
    ) -> None:
        """With pulls left, the probe shows the quota and mints go ahead."""
        quota_stub.remaining = 42
        await world.add(RegistryKind.PUBLIC, quota_stub.url, test_ca.pem, None)
        probe = await world.registries.test("reg", None, None, "team/app")
        assert f"42 of {LIMIT} pulls left" in probe.message
        token = await world.pull_token(f"{quota_stub.host}/team/app:v1")
        assert token.auth_kind is AuthKind.ANONYMOUS
