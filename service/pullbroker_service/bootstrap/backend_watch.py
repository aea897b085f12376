"""The secret backend's and the database's health while the broker runs, and the periodic
reconciler.

A backend that is down at start-up is not fatal: health "pullbroker.secrets" reports
NOT_SERVING, a watcher checks it every few seconds, and the broker recovers on its own
(with metrics on, `pullbroker_secret_backend_up` follows the same checks). The PostgreSQL
database (when configured) is watched the same way as "pullbroker.store": a call that found
it down pokes the watch, which checks at once and again until it answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from pullbroker_service.api.server import BuiltServer
from pullbroker_service.app.reconciler import Reconciler
from pullbroker_service.config.broker import BrokerConfig
from pullbroker_service.domain.errors import BackendUnavailable, BrokerError
from pullbroker_service.infra.logging import get_logger
from pullbroker_service.secrets.factory import GuardedBackend
from pullbroker_service.store.postgres_db import PostgresDatabase

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
    database: PostgresDatabase | None = None,
) -> list[Callable[[], Any]]:
    """The backend check (and the database's), and the reconciler, as tasks; returns their
    cancel-and-wait."""
    interval = config.backend_check_interval_seconds

    async def report_secrets(up: bool) -> None:
        if secrets.metrics is not None:
            secrets.metrics.set_up(up)
        await server.set_secrets_serving(up)

    watch = BackendWatch("secret_backend", secrets.name, secrets.check, report_secrets, interval)
    watch.available = available
    secrets.on_unavailable = watch.poke
    watches = [watch]
    if database is not None:
        db_watch = BackendWatch(
            "metadata_store", database.name, database.check, server.set_store_serving, interval
        )
        database.on_unavailable = db_watch.poke
        watches.append(db_watch)
    tasks = [
        *(asyncio.create_task(w.run(), name=f"pullbroker-{w.what}-watch") for w in watches),
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
    """Checks a backend every `interval` seconds, and soon after a call found it unavailable;
    `report` sets its health (and so the overall ""), and changes are logged as
    `<what>_unavailable` / `<what>_recovered`."""

    def __init__(
        self,
        what: str,
        name: str,
        check: Callable[[], Awaitable[None]],
        report: Callable[[bool], Awaitable[None]],
        interval: float,
    ) -> None:
        self.what = what
        self._name = name
        self._check_once = check
        self._report = report
        self._interval = interval
        self._wake = asyncio.Event()
        self.available = True

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        await self._report(self.available)
        while True:
            # A floor between checks: a burst of failing calls must not become a burst of checks.
            await asyncio.sleep(min(1.0, self._interval))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self._check()

    async def _check(self) -> None:
        try:
            await self._check_once()
        except BrokerError as exc:
            if self.available:
                _log.warning(f"{self.what}_unavailable", backend=self._name, error=str(exc))
            self.available = False
        else:
            if not self.available:
                _log.info(f"{self.what}_recovered", backend=self._name)
            self.available = True
        await self._report(self.available)
