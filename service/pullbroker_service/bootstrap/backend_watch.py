"""The secret backend's health while the broker runs, and the periodic reconciler.

A backend that is down at start-up is not fatal: health "pullbroker.secrets" reports
NOT_SERVING, a watcher checks it every few seconds, and the broker recovers on its own.
With metrics on, `pullbroker_secret_backend_up` follows the same checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from pullbroker_service.api.server import BuiltServer
from pullbroker_service.app.reconciler import Reconciler
from pullbroker_service.config.broker import BrokerConfig
from pullbroker_service.domain.errors import BackendUnavailable, BrokerError
from pullbroker_service.infra.logging import get_logger
from pullbroker_service.secrets.factory import GuardedBackend

_log = get_logger("pullbroker_service.bootstrap.main")


async def first_check(secrets: GuardedBackend) -> bool:
    """True if the backend answers; False if it is down for now; raises if it never will
    (BackendUnavailable without a retry hint: TLS, credential files, KEK file)."""
    try:
        await secrets.check()
    except BackendUnavailable as exc:
        if exc.retry_after is None:
            raise
        _log.warning("secret_backend_unavailable", backend=secrets.name, error=str(exc))
        return False
    return True


def start_background(
    config: BrokerConfig,
    server: BuiltServer,
    secrets: GuardedBackend,
    reconciler: Reconciler,
    available: bool,
) -> list[Callable[[], Any]]:
    """The backend check and the reconciler, as tasks; returns their cancel-and-wait."""
    watch = BackendWatch(secrets, server, config.backend_check_interval_seconds, available)
    secrets.on_unavailable = watch.poke
    tasks = [
        asyncio.create_task(watch.run(), name="pullbroker-backend-watch"),
        asyncio.create_task(
            reconciler.run_periodically(config.reconcile_interval_seconds),
            name="pullbroker-reconciler",
        ),
    ]

    async def cancel() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return [cancel]


class BackendWatch:
    """Checks the secret backend every `interval` seconds, and soon after a call found it
    unavailable; health "pullbroker.secrets" (and "") follow, and changes are logged."""

    def __init__(
        self, secrets: GuardedBackend, server: BuiltServer, interval: float, available: bool
    ) -> None:
        self._secrets = secrets
        self._server = server
        self._interval = interval
        self._wake = asyncio.Event()
        self.available = available

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await self._publish()
        while True:
            # A floor between checks: a burst of failing calls must not become a burst of checks.
            await asyncio.sleep(min(1.0, self._interval))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._check()

    async def _check(self) -> None:
        try:
            await self._secrets.check()
        except BrokerError as exc:
            if self.available:
                _log.warning(
                    "secret_backend_unavailable", backend=self._secrets.name, error=str(exc)
                )
            self.available = False
        else:
            if not self.available:
                _log.info("secret_backend_recovered", backend=self._secrets.name)
            self.available = True
        await self._publish()

    async def _publish(self) -> None:
        if self._secrets.metrics is not None:
            self._secrets.metrics.set_up(self.available)
        await self._server.set_secrets_serving(self.available)
