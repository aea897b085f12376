"""Resolve once, judge every address, connect to one that was judged: the dial guard.

The guard runs inside the connection, on every connection a client opens (first hop and
each redirect's target alike), so no caller can forget it and no second DNS lookup happens
between the check and the connect (DNS rebinding). TLS still verifies, and Host/SNI still
name, the original host: only the socket goes to the checked IP.

This module is for HTTP stacks built on sockets (the sidecar's http.client fetcher);
guarded_backend.py puts the same guard under httpx. Neither imports the other.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence

from pullbroker_client.registry.addresses import (
    BASELINE,
    DialPolicy,
    checked_addresses,
    parse_address,
)

Resolver = Callable[[str], Sequence[str]]
"""host -> the addresses it resolves to (blocking); OSError when it does not resolve."""

AsyncResolver = Callable[[str], Awaitable[Sequence[str]]]


def system_resolve(host: str) -> list[str]:
    """Every address the system resolver gives for `host` (TCP), in its order."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def async_system_resolve(host: str) -> list[str]:
    """`system_resolve` without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def literal(host: str) -> list[str] | None:
    """[host] when `host` is an IP address (nothing to resolve), else None."""
    address = parse_address(host)
    return None if address is None else [str(address)]


def connect_checked(
    host: str,
    port: int,
    timeout: float | None,
    policy: DialPolicy = BASELINE,
    resolve: Resolver = system_resolve,
) -> socket.socket:
    """A TCP socket to an address of `host` that `policy` allows; DialRefused if any is not.

    Addresses are tried in the resolver's order; the last connect error is raised when none
    answers.
    """
    answers = literal(host) or resolve(host)
    addresses = checked_addresses(host, answers, policy)
    failure: OSError = OSError(f"{host} resolved to no address")
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as exc:
            failure = exc
    raise failure


class CheckedHTTPSConnection(http.client.HTTPSConnection):
    """An http.client HTTPS connection whose socket comes from `connect_checked`."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        context: ssl.SSLContext,
        policy: DialPolicy = BASELINE,
        resolve: Resolver = system_resolve,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls = context
        self._policy = policy
        self._resolve = resolve

    def connect(self) -> None:
        sock = connect_checked(self.host, self.port, self.timeout, self._policy, self._resolve)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
