"""Registry authorization backed by the broker: short-lived pull tokens, in memory only.

(Also what the broker client offers the runtime helpers' logins, and the renewal rule both
follow: `RegistryLoginIssuer`, `renew_at`.)

The token is asked for over mTLS (IssuePullToken), turned into the header value at once
and kept as a `Secret`; nothing else of it is kept. A new token is asked for
shortly before the current one expires, or with `force_refresh` when the registry
rejected it (`authorization(refresh=True)`). Refreshes asked for by several downloads
at once (all rejected together) cost one broker call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pullbroker_client.broker import IssuedPullToken, IssuedRegistryLogin
from pullbroker_client.secret import Secret

if TYPE_CHECKING:
    from pullbroker_sidecar.metrics import SidecarMetrics

# A token whose expiry the broker did not say is assumed to live this long (the registry
# token spec's default).
DEFAULT_LIFETIME = 60.0
# Renew this long before expiry, at most; never more than a quarter of the token's life.
RENEW_BEFORE = 30.0
# A refresh asked for within this window of a forced one reuses its token.
COALESCE_WINDOW = 2.0


class PullTokenIssuer(Protocol):
    """What the broker client offers the sidecar (`AsyncBrokerClient`)."""

    async def issue_pull_token(
        self, image: str, registry: str = "", force_refresh: bool = False
    ) -> IssuedPullToken: ...


class RegistryLoginIssuer(Protocol):
    """What the broker client offers the node's runtime helpers (`AsyncBrokerClient`)."""

    async def issue_registry_login(
        self,
        image: str,
        registry: str = "",
        force_refresh: bool = False,
        service_account_token: Secret | None = None,
    ) -> IssuedRegistryLogin: ...


def renew_at(expires_at: float, now: float) -> float:
    """When to ask again for something expiring at `expires_at` (0 or less: the broker did
    not say): RENEW_BEFORE ahead, never more than a quarter of its life."""
    if expires_at <= 0:
        expires_at = now + DEFAULT_LIFETIME
    lifetime = max(0.0, expires_at - now)
    return expires_at - min(RENEW_BEFORE, lifetime / 4)


@dataclass(frozen=True)
class RegistryGrant:
    """Where and what the broker's token lets this node pull; holds no secret."""

    registry: str
    registry_host: str
    registry_url: str
    repository: str
    scope: str
    registry_ca_pem: str
    expires_at: float


class BrokerAuthorizer:
    """The Authorization value for one image's registry requests, fed by the broker
    (what the fetcher asks, and asks again with refresh=True after a 401)."""

    def __init__(
        self,
        broker: PullTokenIssuer,
        image: str,
        *,
        registry: str | None = None,
        clock: Callable[[], float] = time.time,
        metrics: SidecarMetrics | None = None,
    ) -> None:
        self._broker = broker
        self._metrics = metrics
        self._image = image
        self._registry = registry
        self._clock = clock
        self._lock = asyncio.Lock()
        self._header: Secret | None = None
        self._grant: RegistryGrant | None = None
        self._renew_at = 0.0
        self._forced_at: float | None = None
        self.broker_calls = 0

    async def grant(self) -> RegistryGrant:
        """The current grant (asking the broker first if there is none yet)."""
        async with self._lock:
            if self._grant is None:
                await self._issue(force=False)
            assert self._grant is not None
            return self._grant

    async def authorization(self, refresh: bool) -> Secret | None:
        """The Authorization header value; `refresh` after the registry rejected it."""
        async with self._lock:
            now = self._clock()
            if refresh and not self._recently_forced(now):
                await self._issue(force=True)
                self._forced_at = self._clock()
            elif self._grant is None or now >= self._renew_at:
                await self._issue(force=False)
            return self._header

    def _recently_forced(self, now: float) -> bool:
        return self._forced_at is not None and now - self._forced_at < COALESCE_WINDOW

    async def _issue(self, *, force: bool) -> None:
        self.broker_calls += 1
        if self._metrics is not None:
            reason = "forced" if force else "first" if self._grant is None else "renewal"
            self._metrics.refreshed("pull_token", reason)
        token = await self._broker.issue_pull_token(
            self._image, registry=self._registry or "", force_refresh=force
        )
        now = self._clock()
        expires_at = token.expires_at.timestamp()
        if expires_at <= 0:
            expires_at = now + DEFAULT_LIFETIME  # the broker did not say
        self._renew_at = renew_at(expires_at, now)
        self._header = token.authorization()
        self._grant = RegistryGrant(
            registry=token.registry,
            registry_host=token.registry_host,
            registry_url=token.registry_url,
            repository=token.repository,
            scope=token.scope,
            registry_ca_pem=token.registry_ca_pem,
            expires_at=expires_at,
        )
