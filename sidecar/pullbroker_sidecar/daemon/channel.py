"""The daemon's mTLS channel to the broker: rebuilt on rotation, retried with backoff.

Rotation (cert-manager, SPIRE, or an operator) replaces the node certificate and key
files; a watcher notices (inode, size, mtime) changes of the CA, certificate, key and
broker.json, checks that the new key matches the new certificate (a rotation caught
between two file writes must not replace a working channel with a broken one), and swaps
in a new channel. Calls already running on the old channel finish on it; it is closed
when the last of them returns. A call that fails because the broker is away is retried
with exponential backoff (0.1 s doubling to 2 s, with jitter) until its deadline, and
each retry first looks for new files or a new broker address, then builds a fresh
channel, so a broker that comes back (even on another port, per broker.json) is found
without waiting for gRPC's own reconnect backoff.

The address (`--broker`, else broker.json) may name several replicas or one DNS name with
many: the channel itself (pullbroker_client.broker_target) balances calls round-robin over
the replicas that answer and repeats a token call that failed UNAVAILABLE on another one, so
a replica that dies costs no failed call; the loop here covers the whole fleet being away.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import structlog
from cryptography import x509
from pullbroker_client.broker import (
    AsyncBrokerClient,
    BrokerCallError,
    BrokerTarget,
    IssuedPullToken,
    IssuedRegistryLogin,
)
from pullbroker_client.errors import ConfigurationError
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_client.tls import TlsFiles

log = structlog.get_logger("pullbroker_sidecar.channel")

T = TypeVar("T")

NODE_ROLE = "node"
DEFAULT_DEADLINE = 20.0
CALL_TIMEOUT = 10.0
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
RETIRE_AFTER = 60.0
# Calls retrying together must not each build a channel: one fresh channel per this long.
MIN_REBUILD_INTERVAL = 0.5


@dataclass(frozen=True)
class ChannelConfig:
    """Where the broker is and which files prove who this node is."""

    home: Home
    address: str | None = None  # None: broker.json, read again on every rebuild
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def files(self) -> TlsFiles:
        """The CA, certificate and key in use."""
        return TlsFiles.from_home(self.home, NODE_ROLE, ca=self.ca, cert=self.cert, key=self.key)

    def watched(self) -> tuple[Path, ...]:
        """Files whose change means a new channel."""
        files = self.files()
        extra = () if self.address else (self.home.broker_json,)
        return (files.ca, files.cert, files.key, *extra)


class _Client:
    """One channel and the calls running on it."""

    def __init__(self, client: AsyncBrokerClient, address: str, serial: str) -> None:
        self.client = client
        self.address = address
        self.serial = serial
        self.inflight = 0
        self.retired = False
        self.closed = asyncio.Event()

    async def release(self) -> None:
        self.inflight -= 1
        if self.retired and self.inflight == 0:
            await self.close()

    async def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            await self.client.close()


class BrokerChannel:
    """`PullTokenIssuer` and `RegistryLoginIssuer` for the daemon: one live channel, swapped
    on rotation."""

    def __init__(
        self,
        config: ChannelConfig,
        *,
        deadline: float = DEFAULT_DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._deadline = deadline
        self._clock = clock
        self._current: _Client | None = None
        self._fingerprint: tuple[Any, ...] = ()
        self._lock = asyncio.Lock()
        self._built_at = float("-inf")
        self._retiring: set[asyncio.Task[None]] = set()
        self.rebuilds = 0
        self.retries = 0

    async def start(self) -> None:
        """Build the first channel; a missing or broken file raises ConfigurationError."""
        async with self._lock:
            self._swap(self._build(), "started")

    async def issue_pull_token(
        self, image: str, registry: str = "", force_refresh: bool = False
    ) -> IssuedPullToken:
        """IssuePullToken, retried with backoff while the broker is unreachable."""
        return await self._retried(
            lambda client: client.issue_pull_token(image, registry, force_refresh)
        )

    async def issue_registry_login(
        self,
        image: str,
        registry: str = "",
        force_refresh: bool = False,
        service_account_token: Secret | None = None,
    ) -> IssuedRegistryLogin:
        """IssueRegistryLogin, retried with backoff while the broker is unreachable."""
        return await self._retried(
            lambda client: client.issue_registry_login(
                image, registry, force_refresh, service_account_token=service_account_token
            )
        )

    async def _retried(self, call: Callable[[AsyncBrokerClient], Awaitable[T]]) -> T:
        give_up = self._clock() + self._deadline
        delay = FIRST_DELAY
        while True:
            current = await self._client()
            current.inflight += 1
            try:
                return await call(current.client)
            except BrokerCallError as exc:
                if not exc.temporary or self._clock() + delay > give_up:
                    raise
                self.retries += 1
                log.warning("broker_call_retried", code=exc.code.name, delay=round(delay, 2))
            finally:
                await current.release()
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
            delay = min(delay * 2, MAX_DELAY)
            await self.refresh(force=True)

    async def refresh(self, *, force: bool = False) -> bool:
        """Rebuild the channel if its files changed (or `force`); True when it was rebuilt."""
        async with self._lock:
            changed = self._fingerprint != _fingerprint(self._config.watched())
            recent = self._clock() - self._built_at < MIN_REBUILD_INTERVAL
            if not changed and (not force or (recent and self._current is not None)):
                return False
            try:
                built = self._build()
            except (ConfigurationError, ssl.SSLError, OSError, ValueError) as exc:
                log.warning("channel_rebuild_failed", reason=_reason(exc))
                return False
            self._swap(built, "files_changed" if changed else "retry")
            return True

    async def watch(self, interval: float) -> None:
        """Look for rotated files every `interval` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.refresh()

    def status(self) -> dict[str, Any]:
        """What `status` shows: broker address, certificate serial, rebuild counts."""
        current = self._current
        return {
            "broker": current.address if current else None,
            "certificate_serial": current.serial if current else None,
            "rebuilds": self.rebuilds,
            "retries": self.retries,
        }

    async def close(self) -> None:
        """Close every channel (after the calls on them finished or were cancelled)."""
        async with self._lock:
            current, self._current = self._current, None
        if current is not None:
            await current.close()
        for task in list(self._retiring):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def _client(self) -> _Client:
        if self._current is None:
            await self.refresh(force=True)
        if self._current is None:
            raise ConfigurationError("no channel to the broker: check the node certificate files")
        return self._current

    def _build(self) -> _Client:
        fingerprint = _fingerprint(self._config.watched())
        files = self._config.files()
        _ca, cert, _key = files.read()  # each must exist and be PEM
        _check_pair(files)
        address = self._config.address or self._config.home.read_address()
        client = AsyncBrokerClient(BrokerTarget(address, files), timeout=CALL_TIMEOUT)
        built = _Client(client, address, _serial(cert))
        self._fingerprint = fingerprint
        self._built_at = self._clock()
        return built

    def _swap(self, new: _Client, reason: str) -> None:
        old, self._current = self._current, new
        self.rebuilds += 1 if old is not None else 0
        log.info("channel_built", reason=reason, broker=new.address, serial=new.serial)
        if old is not None:
            old.retired = True
            if old.inflight == 0:
                self._later(old.close())
            else:
                self._later(_close_after(old, RETIRE_AFTER))

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)


async def _close_after(old: _Client, seconds: float) -> None:
    """Close a retired channel once its calls returned, or after `seconds` at most."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(old.closed.wait(), seconds)
    await old.close()


def _fingerprint(paths: tuple[Path, ...]) -> tuple[Any, ...]:
    marks: list[Any] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            marks.append(None)
            continue
        marks.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(marks)


def _check_pair(files: TlsFiles) -> None:
    """The key must belong to the certificate and the CA must parse (SSLError otherwise)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cafile=files.ca)


def _serial(cert_pem: bytes) -> str:
    try:
        return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")
    except ValueError:
        return "unknown"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"the certificate and key do not match or do not parse ({exc.reason})"
    return str(exc) or type(exc).__name__
