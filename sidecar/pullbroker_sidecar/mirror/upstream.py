"""The registries behind the mirror, reached with broker tokens only.

One `BrokerAuthorizer` per (host, repository): it asks the broker (the daemon's mTLS
channel, the node's identity) for a pull token, keeps the header in memory as a `Secret`,
renews it before expiry and forces one refresh after a 401. One threaded `BlobFetcher`
per registry URL and CA (the pull engine's fetcher: the dial guard, the redirect rules,
explicit trust). Every request asks its authorizer first, so the broker's policy decides
each repository, also for content the node store already holds.

A broker that does not answer within `broker_wait` seconds gives 503 with Retry-After
rather than holding the runtime for the channel's whole retry deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from pullbroker_client.broker import BrokerCallError
from pullbroker_client.registry.errors import AuthenticationRequired
from pullbroker_client.registry.tls import ssl_context
from pullbroker_client.secret import Secret

from pullbroker_sidecar.errors import GrantMismatch
from pullbroker_sidecar.pull.fetch import BlobFetcher, FetchedManifest
from pullbroker_sidecar.tokens import BrokerAuthorizer, PullTokenIssuer

MAX_REPOSITORIES = 1024
"""Authorizers kept (least recently used dropped first); each holds one token."""


async def authorized(authorizer: BrokerAuthorizer, refresh: bool, wait: float) -> Secret | None:
    """The authorizer's header, or BrokerCallError UNAVAILABLE after `wait` seconds."""
    try:
        return await asyncio.wait_for(authorizer.authorization(refresh=refresh), wait)
    except TimeoutError:
        raise BrokerCallError(
            grpc.StatusCode.UNAVAILABLE, f"the broker did not answer within {wait:g} s"
        ) from None


@dataclass
class Upstream:
    """One repository of one registry, as the broker granted it to this node."""

    repository: str
    authorizer: BrokerAuthorizer
    fetcher: BlobFetcher
    broker_wait: float

    async def authorization(self, refresh: bool = False) -> Secret | None:
        """The broker's current header (BrokerCallError when it refuses or is away)."""
        return await authorized(self.authorizer, refresh, self.broker_wait)

    async def manifest(self, reference: str, accept: Sequence[str]) -> FetchedManifest:
        """GET a manifest (verified against its digest); one forced refresh on a 401."""
        for refresh in (False, True):
            header = await self.authorization(refresh)
            try:
                return await asyncio.to_thread(
                    self.fetcher.fetch_manifest, self.repository, reference, accept, header
                )
            except AuthenticationRequired:
                if refresh:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def blob_size(self, digest: str) -> int:
        """HEAD a blob for its size; one forced refresh on a 401."""
        for refresh in (False, True):
            header = await self.authorization(refresh)
            try:
                return await asyncio.to_thread(
                    self.fetcher.blob_size, self.repository, digest, header
                )
            except AuthenticationRequired:
                if refresh:
                    raise
        raise AssertionError("unreachable: the second attempt returns or raises")


class Upstreams:
    """Authorizers per (host, repository) and fetchers per registry, made on first use."""

    def __init__(self, broker: PullTokenIssuer, *, timeout: float, broker_wait: float) -> None:
        self._broker = broker
        self._timeout = timeout
        self._broker_wait = broker_wait
        self._authorizers: OrderedDict[str, BrokerAuthorizer] = OrderedDict()
        self._fetchers: dict[tuple[str, str], BlobFetcher] = {}

    async def get(self, host: str, repository: str) -> Upstream:
        """The upstream for `host/repository`, after the broker granted it."""
        image = f"{host}/{repository}"
        authorizer = self._authorizers.get(image)
        if authorizer is None:
            authorizer = BrokerAuthorizer(self._broker, image, clock=time.time)
            self._authorizers[image] = authorizer
            while len(self._authorizers) > MAX_REPOSITORIES:
                self._authorizers.popitem(last=False)
        self._authorizers.move_to_end(image)
        await authorized(authorizer, False, self._broker_wait)  # the broker decides each request
        grant = await authorizer.grant()
        if grant.repository and grant.repository != repository:
            raise GrantMismatch(
                f"the broker granted repository {grant.repository!r} for {image}, not "
                f"{repository!r}: check the broker's registry record"
            )
        url = grant.registry_url or f"https://{host}"
        key = (url, grant.registry_ca_pem)
        fetcher = self._fetchers.get(key)
        if fetcher is None:
            context = ssl_context(grant.registry_ca_pem or None)
            fetcher = self._fetchers[key] = BlobFetcher(url, context, timeout=self._timeout)
        return Upstream(repository, authorizer, fetcher, self._broker_wait)

    def close(self) -> None:
        """Close every pooled upstream connection."""
        for fetcher in self._fetchers.values():
            fetcher.close()
        self._fetchers.clear()
