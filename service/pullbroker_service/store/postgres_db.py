"""One PostgreSQL database, one async connection pool: what the PostgreSQL adapters share.

The metadata store, the deployment store and the local secret store's envelope table all
live in one database and borrow connections from one `PostgresDatabase`. It is the one place
psycopg's exceptions become the broker's:

    psycopg.OperationalError (server gone, restarting, refusing; includes the pool's
    PoolTimeout), psycopg.InterfaceError (a connection closed under us)
        -> BackendUnavailable (retry-after 1 s; the next call gets a fresh connection)
    psycopg.errors.UniqueViolation   -> left to the adapter (AlreadyExists, naming the field)
    any other psycopg.Error          -> BackendUnavailable naming its SQLSTATE only

Messages name the class and SQLSTATE, never the server's text or the connection string
(which may hold a password). Every write is one transaction (`transaction()`): a connection
lost in the middle rolls back on the server, so nothing is half-written.

Pooled connections are checked before they are lent (one round trip): after a restart of
the server the stale ones are dropped instead of failing the next call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from pullbroker_client.secret import Secret

from pullbroker_service.domain.errors import BackendUnavailable

Connection = psycopg.AsyncConnection[TupleRow]


@dataclass(frozen=True)
class PoolSettings:
    """How many connections, and how long a call may wait for one."""

    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float = 3.0
    """A call waits this long for a connection, then fails UNAVAILABLE (the server is down or
    every connection is busy)."""
    connect_timeout: float = 3.0
    """libpq's connect_timeout for each new connection."""


class PostgresDatabase:
    """A lazily opened pool on `dsn` (a Secret: it never renders, it may hold a password)."""

    def __init__(
        self,
        dsn: Secret,
        settings: PoolSettings | None = None,
        *,
        name: str = "PostgreSQL",
    ) -> None:
        self.settings = settings or PoolSettings()
        self.name = name
        self.on_unavailable: Callable[[], None] | None = None
        """Called after a call failed with BackendUnavailable (the health watch checks now)."""
        self._dsn = dsn
        self._pool = AsyncConnectionPool(
            dsn.reveal(),
            min_size=self.settings.min_size,
            max_size=self.settings.max_size,
            timeout=self.settings.acquire_timeout,
            kwargs={
                "autocommit": True,
                "connect_timeout": max(1, round(self.settings.connect_timeout)),
            },
            # No check on checkout: it costs an extra round trip on every call (two per
            # IssuePullToken). A connection broken by a restart fails its statement, which is
            # BackendUnavailable (UNAVAILABLE, retry-after: clients retry), and the pool
            # replaces it; the outage tests restart PostgreSQL under traffic to prove it.
            open=False,
            name="pullbroker",
        )
        self._opened = False

    def __repr__(self) -> str:
        return f"PostgresDatabase({self.name!r})"

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit mode: each statement commits on its own."""
        await self._open()
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.errors.UniqueViolation:
            raise
        except psycopg.Error as exc:
            raise self._unavailable(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection inside one transaction, committed when the block ends and
        rolled back when it raises."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def dedicated(self) -> Connection:
        """A connection of its own, outside the pool, in autocommit mode: for a session that
        must last (LISTEN, a session advisory lock). The caller closes it."""
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn.reveal(),
                autocommit=True,
                connect_timeout=max(1, round(self.settings.connect_timeout)),
            )
        except psycopg.Error as exc:
            raise unavailable(self.name, exc) from exc

    async def check(self) -> None:
        """BackendUnavailable unless the server answers a query now."""
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False

    async def _open(self) -> None:
        if not self._opened:
            # wait=False: a server that is down at start must not hold the broker up; calls
            # fail UNAVAILABLE after acquire_timeout until it answers.
            await self._pool.open(wait=False)
            self._opened = True

    def _unavailable(self, exc: psycopg.Error) -> BackendUnavailable:
        if self.on_unavailable is not None:
            self.on_unavailable()
        return unavailable(self.name, exc)


def unavailable(name: str, exc: psycopg.Error) -> BackendUnavailable:
    """The broker's error for a failed database call: the class and SQLSTATE only."""
    state = f", SQLSTATE {exc.sqlstate}" if exc.sqlstate else ""
    return BackendUnavailable(
        f"{name} did not answer ({type(exc).__name__}{state}): check that the database "
        "is running and reachable; calls succeed again once it answers"
    )


def dsn_password(dsn: Secret) -> str | None:
    """The password a connection string holds, as libpq reads it (URI or key=value, quoted,
    percent-decoded, `?password=`), or None. ValueError when it is no connection string;
    the message says nothing of it (libpq's own would quote a fragment, maybe the password).
    """
    try:
        params = conninfo_to_dict(dsn.reveal())
    except psycopg.Error:
        raise ValueError(
            "is not a PostgreSQL connection string libpq can read (it is not shown: it may "
            "hold a password); e.g. postgresql://user:password@host:5432/dbname"
        ) from None
    password = params.get("password")
    return str(password) if password else None
