"""MetadataStore on SQLite (WAL). Records hold references to secrets, never secrets.

SQLite runs on one dedicated thread. The token path reads a record on every call, so `get`,
`get_by_display_name` and `find_by_host` answer from a small in-process cache: this store's
own writes clear it at once, and entries expire after `cache_ttl` seconds so that, once
several replicas share a database (PostgreSQL), another replica's write shows within that bound.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from pullbroker_service.domain.errors import (
    AlreadyExists,
    EtagMismatch,
    RegistryNotFound,
)
from pullbroker_service.domain.model import RecordState, RegistryRecord
from pullbroker_service.infra.sqlite_worker import (
    SqliteWorker,
    check_schema_version,
    open_private_database,
)
from pullbroker_service.store.base import HostCheck
from pullbroker_service.store.rows import REGISTRY_FIELDS, SQLITE, registry_record, registry_row

T = TypeVar("T")

SCHEMA_VERSION = 3
"""2: previous_secret_ref, the version a rotation replaced (kept for a rollback).
3: repositories, the record's repository globs (a JSON list; '[]': every repository)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS registries (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    registry_ca_pem TEXT NOT NULL,
    region TEXT NOT NULL,
    allow_basic_passthrough INTEGER NOT NULL,
    credential_version INTEGER NOT NULL,
    secret_ref TEXT,
    creator TEXT NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    etag TEXT NOT NULL,
    state TEXT NOT NULL,
    previous_secret_ref TEXT,
    repositories TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS registries_host ON registries (host, state);
"""
_COLUMNS = ", ".join(REGISTRY_FIELDS)
_SELECT = f"SELECT {_COLUMNS} FROM registries"  # noqa: S608 - constant column list


@dataclass
class _Cached:
    at: float
    value: Any


class SqliteMetadataStore:
    """MetadataStore on a SQLite file. `cache_ttl` bounds how stale a cached read may be."""

    def __init__(
        self,
        db_path: Path,
        *,
        cache_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = db_path
        self._ttl = cache_ttl
        self._clock = clock
        self._worker = SqliteWorker(
            db_path,
            _connect,
            what="metadata store",
            thread_name="pb-metadata",
            passthrough=(sqlite3.IntegrityError,),
        )
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._generation = 0  # bumped by every write; a read that raced a write is not cached

    def __repr__(self) -> str:
        return f"SqliteMetadataStore({str(self._path)!r})"

    async def create(self, record: RegistryRecord, check: HostCheck | None = None) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            _check_host(conn, record, check)
            marks = ", ".join("?" * len(_COLUMNS.split(",")))
            conn.execute(
                f"INSERT INTO registries ({_COLUMNS}) VALUES ({marks})",  # noqa: S608
                registry_row(record, SQLITE),
            )

        await self._write(insert, record)

    async def get(self, registry_id: str) -> RegistryRecord:
        found: RegistryRecord | None = await self._cached_read(
            ("id", registry_id), lambda c: _one(c, f"{_SELECT} WHERE id = ?", registry_id)
        )
        if found is None:
            raise RegistryNotFound(f"registry registries/{registry_id} does not exist")
        return found

    async def get_by_display_name(self, display_name: str) -> RegistryRecord:
        sql = f"{_SELECT} WHERE display_name = ?"
        found: RegistryRecord | None = await self._cached_read(
            ("name", display_name), lambda c: _one(c, sql, display_name)
        )
        if found is None:
            raise RegistryNotFound(f"no registry is named {display_name!r}")
        return found

    async def find_by_host(self, host: str) -> list[RegistryRecord]:
        sql = f"{_SELECT} WHERE host = ? AND state = ? ORDER BY id"
        found: list[RegistryRecord] = await self._cached_read(
            ("host", host), lambda c: _many(c, sql, host, RecordState.READY.value)
        )
        return list(found)

    async def list_page(self, page_size: int, after_id: str | None) -> list[RegistryRecord]:
        sql = f"{_SELECT} WHERE id > ? ORDER BY id LIMIT ?"
        return await self._run(lambda c: _many(c, sql, after_id or "", page_size))

    async def list_pending(self) -> list[RegistryRecord]:
        sql = f"{_SELECT} WHERE state = ? ORDER BY id"
        return await self._run(lambda c: _many(c, sql, RecordState.PENDING.value))

    async def replace(
        self, record: RegistryRecord, expected_etag: str, check: HostCheck | None = None
    ) -> None:
        if record.etag == expected_etag:
            raise ValueError("a replaced record needs a new etag")

        def update(conn: sqlite3.Connection) -> None:
            _check_host(conn, record, check)
            sets = ", ".join(f"{c.strip()} = ?" for c in _COLUMNS.split(",")[1:])
            cur = conn.execute(
                f"UPDATE registries SET {sets} WHERE id = ? AND etag = ?",  # noqa: S608
                (*registry_row(record, SQLITE)[1:], record.id, expected_etag),
            )
            if cur.rowcount == 0:
                _raise_missing_or_stale(conn, record.id, record.display_name)

        await self._write(update, record)

    async def delete(self, registry_id: str, expected_etag: str | None) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            if expected_etag is None:
                cur = conn.execute("DELETE FROM registries WHERE id = ?", (registry_id,))
            else:
                sql = "DELETE FROM registries WHERE id = ? AND etag = ?"
                cur = conn.execute(sql, (registry_id, expected_etag))
            if cur.rowcount == 0:
                _raise_missing_or_stale(conn, registry_id, registry_id)

        await self._write(delete, None)

    async def close(self) -> None:
        await self._worker.close()

    async def _cached_read(
        self, key: tuple[str, str], read: Callable[[sqlite3.Connection], T]
    ) -> T:
        hit = self._cache.get(key)
        now = self._clock()
        if hit is not None and now - hit.at < self._ttl:
            return cast(T, hit.value)
        generation = self._generation
        value = await self._run(read)
        if generation == self._generation:
            if len(self._cache) > 4096:  # many distinct misses (e.g. unknown hosts): start over
                self._cache.clear()
            self._cache[key] = _Cached(now, value)
        return value

    async def _write(
        self, fn: Callable[[sqlite3.Connection], None], record: RegistryRecord | None
    ) -> None:
        self._generation += 1
        self._cache.clear()
        try:
            await self._run(lambda c: _transaction(c, fn))
        except sqlite3.IntegrityError as exc:
            if record is not None and "display_name" in str(exc):
                raise AlreadyExists(
                    f"a registry named {record.display_name!r} already exists: choose another "
                    "display_name"
                ) from exc
            raise AlreadyExists(
                f"registry id {record.id if record else '?'} is already taken: retry"
            ) from exc
        finally:
            self._generation += 1
            self._cache.clear()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.run(fn)


def _connect(path: Path) -> sqlite3.Connection:
    conn = open_private_database(path, synchronous="NORMAL")
    conn.executescript(_SCHEMA)
    check_schema_version(conn, path, SCHEMA_VERSION, what="metadata store")
    _upgrade(conn)
    return conn


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a file written by an older broker to SCHEMA_VERSION, in one transaction: each
    column a newer schema added is added where missing (existing rows get its default)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(registries)")}
    added = {
        "previous_secret_ref": "ALTER TABLE registries ADD COLUMN previous_secret_ref TEXT",
        "repositories": "ALTER TABLE registries ADD COLUMN repositories TEXT NOT NULL DEFAULT '[]'",
    }
    missing = [sql for column, sql in added.items() if column not in columns]
    if not missing:
        return

    def add_columns(c: sqlite3.Connection) -> None:
        for sql in missing:
            c.execute(sql)
        c.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    _transaction(conn, add_columns)


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], None]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_host(conn: sqlite3.Connection, record: RegistryRecord, check: HostCheck | None) -> None:
    """Run `check` on the host's other records. Every write is a BEGIN IMMEDIATE transaction
    (`_transaction`), which holds SQLite's one write lock from before this read until the
    write commits, so no other writer, in this process or another, lands in between."""
    if check is not None:
        check(
            _many(conn, f"{_SELECT} WHERE host = ? AND id <> ? ORDER BY id", record.host, record.id)
        )


def _raise_missing_or_stale(conn: sqlite3.Connection, registry_id: str, name: str) -> None:
    row = conn.execute("SELECT etag FROM registries WHERE id = ?", (registry_id,)).fetchone()
    if row is None:
        raise RegistryNotFound(f"registry registries/{registry_id} does not exist")
    raise EtagMismatch(
        f"registry {name!r} was changed since you read it (its etag is now {row[0]}): read it "
        "again and retry",
        current_etag=str(row[0]),
    )


def _one(conn: sqlite3.Connection, sql: str, *params: object) -> RegistryRecord | None:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else registry_record(row, SQLITE)


def _many(conn: sqlite3.Connection, sql: str, *params: object) -> list[RegistryRecord]:
    return [registry_record(row, SQLITE) for row in conn.execute(sql, params).fetchall()]
