"""ChangeFeed on PostgreSQL: LISTEN on the channel the deployments trigger notifies.

Every committed insert, update or delete of a deployment, on any replica, is notified by the
server (migration 0002's trigger, from the write's own transaction). One dedicated
connection per replica LISTENs; each notification's payload (the deployment id) is handed
to the listeners. When that connection is lost (the server restarted, the network broke),
notifications sent meanwhile are lost with it, so after every (re)connection the listeners
are told None: every watcher re-reads its deployment, and nothing is missed.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import psycopg
import structlog

from pullbroker_service.domain.errors import BackendUnavailable
from pullbroker_service.store.changes import Listener, Listeners
from pullbroker_service.store.postgres_db import Connection, PostgresDatabase

log = structlog.get_logger()

DEPLOYMENTS_CHANNEL = "pullbroker_deployments"
_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0)
_PROBE_SECONDS = 5.0


class PostgresChangeFeed:
    """LISTEN `channel` on `db` from a background task started by `start()`."""

    def __init__(
        self,
        db: PostgresDatabase,
        channel: str = DEPLOYMENTS_CHANNEL,
        *,
        resync_interval: float = 30.0,
    ) -> None:
        self.resync_interval = resync_interval
        self._db = db
        self._channel = channel
        self._listeners = Listeners()
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while the LISTEN session is up (tests wait for it)."""

    def subscribe(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def publish(self, key: str) -> None:
        # The trigger notifies every replica, this one included; telling our own listeners
        # now as well spares them the round trip (a duplicate wake-up only re-reads).
        self._listeners.tell(key)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pullbroker-change-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._listen()
                failures = 0
            except (BackendUnavailable, psycopg.Error) as exc:
                if failures == 0:
                    log.warning("change_feed_lost", channel=self._channel, error=_what(exc))
                failures += 1
            self.listening.clear()
            await asyncio.sleep(_RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)])

    async def _listen(self) -> None:
        conn = await self._db.dedicated()
        try:
            await conn.execute(f"LISTEN {self._channel}".encode())
            self.listening.set()
            log.info("change_feed_listening", channel=self._channel)
            self._listeners.tell(None)  # whatever happened while we were not listening
            await self._deliver(conn)
        finally:
            with suppress(Exception):
                await conn.close()

    async def _deliver(self, conn: Connection) -> None:
        while True:
            async for notify in conn.notifies(timeout=_PROBE_SECONDS):
                self._listeners.tell(notify.payload)
            # Quiet for a while: make sure the session is alive (a dead one raises here),
            # since a silently broken connection would otherwise wait forever.
            await conn.execute("SELECT 1")


def _what(exc: Exception) -> str:
    if isinstance(exc, BackendUnavailable):
        return str(exc)
    state = f", SQLSTATE {exc.sqlstate}" if isinstance(exc, psycopg.Error) and exc.sqlstate else ""
    return f"{type(exc).__name__}{state}"
