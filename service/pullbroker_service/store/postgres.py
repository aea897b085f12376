"""MetadataStore on PostgreSQL: one database shared by every broker replica.

Race-free across replicas: `replace` and `delete` are one conditional statement
(`UPDATE ... WHERE id = $id AND etag = $old RETURNING id`), so of two writers holding the same
etag exactly one wins and the other gets EtagMismatch carrying the etag the row has now; the
UNIQUE constraint on display_name makes two concurrent creates of one name yield one record
(the loser gets AlreadyExists). A write with a HostCheck (store/base.py) takes a lock on its
host inside its transaction before it reads the host's records, so of two replicas creating
records that may not coexist on one host, the second reads the first's and is refused.

Reads go to the database every time, so a write on one replica is read on every other at
once. The token path's reads (`get`, `get_by_display_name`, `find_by_host`) also remember
their last answer: while the database is unreachable they answer from it, so nodes keep
getting tokens the broker has cached (their minting needs the record's host and credential
version, nothing the outage could have changed: no replica can write either). Any write made
through this store forgets those answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import structlog

from pullbroker_service.domain.errors import (
    AlreadyExists,
    BackendUnavailable,
    EtagMismatch,
    RegistryNotFound,
)
from pullbroker_service.domain.model import RecordState, RegistryRecord
from pullbroker_service.store.base import HostCheck
from pullbroker_service.store.postgres_db import Connection, PostgresDatabase
from pullbroker_service.store.rows import POSTGRES, REGISTRY_FIELDS, registry_record, registry_row

T = TypeVar("T")
log = structlog.get_logger()

_FIELDS = REGISTRY_FIELDS
_COLUMNS = ", ".join(_FIELDS)
_SELECT = f"SELECT {_COLUMNS} FROM registries"  # noqa: S608 - constant column list
_INSERT = f"INSERT INTO registries ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(_FIELDS))})"  # noqa: S608
_SETS = ", ".join(f"{c} = %s" for c in _FIELDS[1:])
_EXCLUDED = ", ".join(f"{c} = EXCLUDED.{c}" for c in _FIELDS[1:])
_UPSERT = f"{_INSERT} ON CONFLICT (id) DO UPDATE SET {_EXCLUDED}"
_UPDATE = f"UPDATE registries SET {_SETS} WHERE id = %s AND etag = %s RETURNING id"  # noqa: S608
_LAST_KNOWN_MAX = 4096
# Checked writes take a transaction-scoped advisory lock per host. The two-key form keeps
# these out of the one-key space of the migration and periodic-jobs locks; two hosts whose
# hashes collide only wait for each other.
_HOST_LOCKS = 0x70627267  # 'pbrg'
_LOCK_HOST = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
HOST_LOCK_TIMEOUT_MS = 5000
"""How long a checked write waits for its host's lock (and the rest of its transaction for
any row lock): a holder whose session froze must not stall every replica's writes to the
host, each holding a pool connection, until TCP gives up on it."""
_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, true)"
_HOST_OTHERS = f"{_SELECT} WHERE host = %s AND id <> %s ORDER BY id"


class PostgresMetadataStore:
    """MetadataStore on the `registries` table of `db` (migrated before use)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db
        self._last_known: dict[tuple[str, str], Any] = {}

    def __repr__(self) -> str:
        return f"PostgresMetadataStore({self._db!r})"

    async def create(self, record: RegistryRecord, check: HostCheck | None = None) -> None:
        async def insert(conn: Connection) -> None:
            await _check_host(conn, record, check)
            await conn.execute(_INSERT, registry_row(record, POSTGRES))

        await self._write(insert, record.display_name)

    async def upsert(self, record: RegistryRecord) -> None:
        """Insert `record`, or overwrite the record with its id whatever its etag (copying
        records from another store: a re-run writes the same rows again)."""
        await self._write(
            lambda c: c.execute(_UPSERT, registry_row(record, POSTGRES)), record.display_name
        )

    async def get(self, registry_id: str) -> RegistryRecord:
        sql = f"{_SELECT} WHERE id = %s"
        found = await self._read(("id", registry_id), lambda c: _one(c, sql, registry_id))
        if found is None:
            raise RegistryNotFound(f"registry registries/{registry_id} does not exist")
        return found

    async def get_by_display_name(self, display_name: str) -> RegistryRecord:
        sql = f"{_SELECT} WHERE display_name = %s"
        found = await self._read(("name", display_name), lambda c: _one(c, sql, display_name))
        if found is None:
            raise RegistryNotFound(f"no registry is named {display_name!r}")
        return found

    async def find_by_host(self, host: str) -> list[RegistryRecord]:
        sql = f"{_SELECT} WHERE host = %s AND state = %s ORDER BY id"
        ready = RecordState.READY.value
        found = await self._read(("host", host), lambda c: _many(c, sql, host, ready))
        return list(found)

    async def list_page(self, page_size: int, after_id: str | None) -> list[RegistryRecord]:
        sql = f"{_SELECT} WHERE id > %s ORDER BY id LIMIT %s"
        async with self._db.connection() as conn:
            return await _many(conn, sql, after_id or "", page_size)

    async def list_pending(self) -> list[RegistryRecord]:
        sql = f"{_SELECT} WHERE state = %s ORDER BY id"
        async with self._db.connection() as conn:
            return await _many(conn, sql, RecordState.PENDING.value)

    async def replace(
        self, record: RegistryRecord, expected_etag: str, check: HostCheck | None = None
    ) -> None:
        if record.etag == expected_etag:
            raise ValueError("a replaced record needs a new etag")

        async def update(conn: Connection) -> None:
            await _check_host(conn, record, check)
            cur = await conn.execute(
                _UPDATE, (*registry_row(record, POSTGRES)[1:], record.id, expected_etag)
            )
            if await cur.fetchone() is None:
                await _raise_missing_or_stale(conn, record.id, record.display_name)

        await self._write(update, record.display_name)

    async def delete(self, registry_id: str, expected_etag: str | None) -> None:
        async def delete(conn: Connection) -> None:
            params: tuple[str, ...] = (registry_id,)
            if expected_etag is None:
                sql = "DELETE FROM registries WHERE id = %s RETURNING id"
            else:
                sql = "DELETE FROM registries WHERE id = %s AND etag = %s RETURNING id"
                params = (registry_id, expected_etag)
            cur = await conn.execute(sql, params)
            if await cur.fetchone() is None:
                await _raise_missing_or_stale(conn, registry_id, registry_id)

        await self._write(delete, None)

    async def close(self) -> None:
        """The database is shared with the other stores; its owner closes it."""

    async def _read(self, key: tuple[str, str], read: Callable[[Connection], Awaitable[T]]) -> T:
        try:
            async with self._db.connection() as conn:
                value = await read(conn)
        except BackendUnavailable:
            if key not in self._last_known:
                raise
            log.warning("metadata_served_from_memory", lookup=key[0], reason="database down")
            stale: T = self._last_known[key]
            return stale
        if len(self._last_known) >= _LAST_KNOWN_MAX:
            self._last_known.clear()
        self._last_known[key] = value
        return value

    async def _write(
        self, fn: Callable[[Connection], Awaitable[object]], display_name: str | None
    ) -> None:
        # Memory is only answered from while the database is unreachable, when no write can
        # land either: so it is forgotten after a write, not before. A write the database
        # did not take (BackendUnavailable) keeps it: a refused admin write must not end
        # the cached answers every node is getting through the outage.
        try:
            async with self._db.transaction() as conn:
                await fn(conn)
        except BackendUnavailable:
            raise
        except psycopg.errors.UniqueViolation as exc:
            self._last_known.clear()
            if exc.diag.constraint_name == "registries_display_name_key":
                raise AlreadyExists(
                    f"a registry named {display_name!r} already exists: choose another display_name"
                ) from exc
            raise AlreadyExists("that registry id is already taken: retry") from exc
        except BaseException:
            self._last_known.clear()
            raise
        self._last_known.clear()


async def _check_host(conn: Connection, record: RegistryRecord, check: HostCheck | None) -> None:
    """Run `check` on the host's other records, holding the host's lock until the transaction
    ends: a checked write on another replica waits here, then reads what this one wrote (under
    READ COMMITTED each statement reads what was committed before it began)."""
    if check is None:
        return
    await conn.execute(_LOCK_TIMEOUT, (f"{HOST_LOCK_TIMEOUT_MS}ms",))
    try:
        await conn.execute(_LOCK_HOST, (_HOST_LOCKS, record.host))
    except psycopg.errors.LockNotAvailable:
        raise BackendUnavailable(
            f"another write to the registries of host {record.host} held its turn for over "
            f"{HOST_LOCK_TIMEOUT_MS / 1000:g} s: retry (nothing was written)"
        ) from None
    check(await _many(conn, _HOST_OTHERS, record.host, record.id))


async def _raise_missing_or_stale(conn: Connection, registry_id: str, name: str) -> None:
    cur = await conn.execute("SELECT etag FROM registries WHERE id = %s", (registry_id,))
    row = await cur.fetchone()
    if row is None:
        raise RegistryNotFound(f"registry registries/{registry_id} does not exist")
    raise EtagMismatch(
        f"registry {name!r} was changed since you read it (its etag is now {row[0]}): read it "
        "again and retry",
        current_etag=str(row[0]),
    )


async def _one(conn: Connection, sql: str, *params: object) -> RegistryRecord | None:
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return None if row is None else registry_record(row, POSTGRES)


async def _many(conn: Connection, sql: str, *params: object) -> list[RegistryRecord]:
    cur = await conn.execute(sql, params)
    return [registry_record(row, POSTGRES) for row in await cur.fetchall()]
