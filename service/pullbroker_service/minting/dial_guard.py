"""The dial-time half of the SSRF defence: a host is judged by the addresses it resolves to.

Validation (domain/hosts.py) refuses literal addresses and disguised ones when a record is
written; a DNS name can still point anywhere, and can change, so the minters ask the guard
right before they dial a registry or a token realm. Every resolved address must pass.

Limits, on purpose: the HTTP client resolves the name again when it connects, so a name
whose answers flip between the check and the dial (DNS rebinding with a zero TTL) is not
caught here; pinning the checked address into the connection needs a hook in the registry
client's transport. Successful checks are remembered for `ttl` seconds so a mint costs no
extra DNS round trip while the challenge cache is warm.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Awaitable, Callable

from pullbroker_service.domain.hosts import DialPolicy, check_dialable, check_resolved

Resolver = Callable[[str], Awaitable[list[str]]]

_MAX_REMEMBERED = 1024


async def system_resolve(host: str) -> list[str]:
    """Every address the system resolver gives for `host` (TCP)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


class DialGuard:
    """Refuses hosts whose addresses `policy` does not allow; raises InvalidRegistry."""

    def __init__(
        self,
        policy: DialPolicy,
        *,
        resolve: Resolver = system_resolve,
        ttl: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._resolve = resolve
        self._ttl = ttl
        self._monotonic = monotonic
        self._passed: dict[str, float] = {}

    async def check(self, host: str, field: str) -> None:
        """Raise InvalidRegistry naming `field` if the broker must not dial `host`."""
        name = host.strip("[]").lower()
        check_dialable(name, field, self.policy)
        if _is_address(name):
            return  # judged whole by check_dialable
        passed_at = self._passed.get(name)
        now = self._monotonic()
        if passed_at is not None and now - passed_at < self._ttl:
            return
        try:
            addresses = await self._resolve(name)
        except OSError:
            return  # the dial fails with the transport's own "cannot connect" message
        check_resolved(name, addresses, field, self.policy)
        if len(self._passed) >= _MAX_REMEMBERED:
            self._passed.clear()
        self._passed[name] = now


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
