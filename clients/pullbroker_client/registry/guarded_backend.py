"""The dial guard under httpx: an httpcore network backend that checks every connection.

httpcore asks its network backend for a TCP stream to (host, port) whenever the pool opens
a connection, for the first request and for every redirect target alike, and then starts
TLS on that stream with the origin's host as SNI and certificate name. Resolving and
judging here, and connecting to the checked IP, is therefore the one place the guard can
neither be skipped nor raced by a second DNS lookup (see dial.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpcore
import httpx

from pullbroker_client.registry.addresses import BASELINE, DialPolicy, checked_addresses
from pullbroker_client.registry.dial import AsyncResolver, async_system_resolve, literal

__all__ = ["GuardedBackend", "guarded_transport"]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses `policy` allows, resolving each host once per connection."""

    def __init__(
        self,
        policy: DialPolicy = BASELINE,
        *,
        resolve: AsyncResolver = async_system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolve = resolve
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._checked(host, timeout)
        failure: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's backend interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("registry clients do not dial unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _checked(self, host: str, within: float | None) -> list[str]:
        answers = literal(host)
        if answers is None:
            try:
                async with asyncio.timeout(within):
                    answers = list(await self._resolve(host))
            except TimeoutError as exc:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
            except OSError as exc:
                raise httpcore.ConnectError(
                    f"{host} does not resolve ({exc.strerror or type(exc).__name__})"
                ) from exc
        return checked_addresses(host, answers, self.policy)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (exception mapping, response wrapping) over a guarded pool."""

    def __init__(self, context: ssl.SSLContext, backend: GuardedBackend) -> None:
        super().__init__(verify=context, trust_env=False)
        limits = httpx.Limits()
        # httpx takes no network backend argument, so the pool it built is replaced by the
        # same pool on `backend`; every other behaviour stays httpx's own.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


def no_cookies() -> CookieJar:
    """A cookie jar that keeps nothing, for every httpx client that talks to registries.

    httpx keeps each Set-Cookie and sends it on later requests; one client serves many
    records (one per CA bundle), so a session cookie won with one credential would go out
    with another's requests, and a cookie for a parent domain would follow a cross-origin
    redirect after Authorization was dropped. Registries need no cookies.
    """
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def guarded_transport(context: ssl.SSLContext, backend: GuardedBackend) -> httpx.AsyncBaseTransport:
    """An httpx transport trusting `context` whose every connection goes through `backend`."""
    return _GuardedTransport(context, backend)
