"""Stand-ins for the broker in unit tests: a settable clock and a numbered-token issuer."""

from __future__ import annotations

import asyncio
import datetime as dt

from pullbroker_client.broker import IssuedPullToken
from pullbroker_client.secret import Secret


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class StubIssuer:
    """Stands in for the broker's IssuePullToken: numbered tokens, each call recorded."""

    def __init__(self, clock: FakeClock, *, ttl: float = 300.0, kind: str = "bearer") -> None:
        self.clock = clock
        self.ttl = ttl
        self.kind = kind
        self.calls: list[tuple[str, str | None, bool]] = []

    async def issue_pull_token(
        self, image: str, registry: str | None = None, force_refresh: bool = False
    ) -> IssuedPullToken:
        self.calls.append((image, registry, force_refresh))
        await asyncio.sleep(0)
        expires = dt.datetime.fromtimestamp(self.clock.now + self.ttl, dt.UTC)
        return IssuedPullToken(
            registry="registries/r1",
            registry_host="127.0.0.1:5000",
            registry_url="https://127.0.0.1:5000",
            auth_kind=self.kind,
            username="robot",
            token=Secret(f"tok-{len(self.calls)}"),
            scope="repository:team/app:pull",
            expires_at=expires,
            repository="team/app",
            registry_ca_pem="",
        )
