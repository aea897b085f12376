"""JobLock on PostgreSQL: a session advisory lock on a dedicated connection.

`pg_try_advisory_lock` never waits: of the replicas asking, one holds the lock and the
others are told no and ask again at their next check. The lock lives as long as the session:
when the holder dies (SIGKILL, OOM, a lost host) its connection closes and the server frees
the lock, and the next replica to check takes it. A restarted server frees it too; the holder
notices at its next `held()` (the probe on its session fails) and competes again like the
others.
"""

from __future__ import annotations

import os
from contextlib import suppress

import psycopg
import structlog

from pullbroker_service.domain.errors import BackendUnavailable
from pullbroker_service.store.postgres_db import Connection, PostgresDatabase

log = structlog.get_logger()

# "pbjobs" in ASCII; distinct from the migration lock.
JOBS_LOCK_ID = 0x70626A6F6273


class PostgresJobLock:
    """The periodic-jobs lock of every replica on `db`."""

    def __init__(self, db: PostgresDatabase, lock_id: int = JOBS_LOCK_ID) -> None:
        self._db = db
        self._lock_id = lock_id
        self._conn: Connection | None = None
        self._holding = False
        self._told_busy = False

    async def held(self) -> bool:
        try:
            conn = await self._session()
            if self._holding:
                await conn.execute("SELECT 1")  # the lock lives exactly as long as this session
                return True
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_id,))
            row = await cur.fetchone()
        except (BackendUnavailable, psycopg.Error):
            await self._lost()
            return False
        self._holding = bool(row and row[0])
        if self._holding:
            log.info("periodic_jobs_lock_acquired", pid=os.getpid())
            self._told_busy = False
        elif not self._told_busy:  # once per stretch of waiting, not every interval
            log.info("periodic_jobs_lock_busy", pid=os.getpid())
            self._told_busy = True
        return self._holding

    async def close(self) -> None:
        conn, self._conn, self._holding = self._conn, None, False
        if conn is not None:
            with suppress(Exception):
                await conn.close()  # ends the session, which frees the lock

    async def _session(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = await self._db.dedicated()
        return self._conn

    async def _lost(self) -> None:
        if self._holding:
            log.warning("periodic_jobs_lock_lost", pid=os.getpid())
        await self.close()
