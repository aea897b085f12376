"""The local secret store's envelopes in a SQLite file (<home>/secrets/secrets.db).

Threads: writes (each a transaction that fsyncs, synchronous=FULL) run on one dedicated
thread. `select` reads on the event loop itself, through a second, read-only connection: in
WAL mode a reader never waits for the writer, and a primary-key lookup in a small, hot file
takes microseconds, while a hop to a thread and back costs tens of them, most of a read's
cost on the token path. Reads that may scan (list_keys, list_versions, count) still go to
the thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pullbroker_service.domain.errors import BackendUnavailable
from pullbroker_service.infra.sqlite_worker import (
    SqliteWorker,
    check_schema_version,
    open_private_database,
)
from pullbroker_service.secrets.envelopes import Envelope, Sealer

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS key_versions (key TEXT PRIMARY KEY, last_version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS envelopes (
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    kek TEXT NOT NULL,
    wrapped_key BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (key, version)
);
"""
# Read with fetchall, not fetchone: it runs the statement to its end, so no read transaction
# stays open on the connection between calls.
_SELECT_ENVELOPE = (
    "SELECT kek, wrapped_key, nonce, ciphertext FROM envelopes WHERE key = ? AND version = ?"
)


class SqliteEnvelopeTable:
    """EnvelopeTable on a SQLite file."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path
        self._worker = SqliteWorker(
            db_path, _connect, what="local secret store", thread_name="pb-secrets"
        )
        self._reader: sqlite3.Cursor | None = None  # used on the event loop only

    def __repr__(self) -> str:
        return f"SqliteEnvelopeTable({str(self.path)!r})"

    async def insert_next_version(self, key: str, seal: Sealer) -> int:
        return await self._run(lambda c: _store_new_version(c, key, seal))

    async def insert_version(
        self, key: str, version: int, envelope: Envelope, created_at: datetime
    ) -> None:
        await self._run(lambda c: _store_version(c, key, version, envelope, created_at))

    async def select(self, key: str, version: int) -> Envelope | None:
        reader = self._reader or await self._open_reader()
        try:
            rows = reader.execute(_SELECT_ENVELOPE, (key, version)).fetchall()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return _envelope(rows[0]) if rows else None

    async def update(self, key: str, version: int, envelope: Envelope) -> None:
        kek, wrapped, nonce, ciphertext = envelope
        sql = (
            "UPDATE envelopes SET kek = ?, wrapped_key = ?, nonce = ?, ciphertext = ? "
            "WHERE key = ? AND version = ?"
        )
        await self._run(lambda c: c.execute(sql, (kek, wrapped, nonce, ciphertext, key, version)))

    async def delete(self, key: str) -> None:
        await self._run(lambda c: c.execute("DELETE FROM envelopes WHERE key = ?", (key,)))

    async def delete_version(self, key: str, version: int) -> None:
        sql = "DELETE FROM envelopes WHERE key = ? AND version = ?"
        await self._run(lambda c: c.execute(sql, (key, version)))

    async def list_keys(self) -> list[str]:
        sql = "SELECT DISTINCT key FROM envelopes ORDER BY key"
        rows = await self._run(lambda c: c.execute(sql).fetchall())
        return [str(r[0]) for r in rows]

    async def list_versions(self, key: str) -> list[tuple[int, datetime]]:
        sql = "SELECT version, created_at FROM envelopes WHERE key = ? ORDER BY version"
        rows = await self._run(lambda c: c.execute(sql, (key,)).fetchall())
        return [(int(v), datetime.fromisoformat(str(at))) for v, at in rows]

    async def not_under(self, kek: str) -> list[tuple[str, int]]:
        sql = "SELECT key, version FROM envelopes WHERE kek != ? ORDER BY key, version"
        rows = await self._run(lambda c: c.execute(sql, (kek,)).fetchall())
        return [(str(k), int(v)) for k, v in rows]

    async def check(self) -> None:
        await self._run(lambda c: c.execute("SELECT count(*) FROM envelopes").fetchone())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.connection.close()
            self._reader = None
        await self._worker.close()

    async def _open_reader(self) -> sqlite3.Cursor:
        # One cursor, kept: making a cursor per read costs as much as a third of the read.
        try:
            await self._run(lambda c: None)  # the writer creates the file and schema first
            if self._reader is None:  # another read may have opened it meanwhile
                self._reader = _connect_reader(self.path).cursor()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc
        return self._reader

    def _unavailable(self, exc: sqlite3.Error) -> BackendUnavailable:
        return self._worker.unavailable(exc)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.run(fn)


def _connect(path: Path) -> sqlite3.Connection:
    conn = open_private_database(path, synchronous="FULL")
    conn.executescript(_SCHEMA)
    check_schema_version(conn, path, SCHEMA_VERSION, what="local secret store")
    return conn


def _connect_reader(path: Path) -> sqlite3.Connection:
    # Opened on the event loop's thread and only used there; check_same_thread=False because
    # a backend may outlive one loop in tests (SQLite itself is built serialised).
    conn = sqlite3.connect(path, isolation_level=None, timeout=1.0, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    return conn


def _store_new_version(conn: sqlite3.Connection, key: str, seal: Sealer) -> int:
    # The version counter, the sealing (its AAD names the version) and the insert are one
    # transaction on one thread hop: one fsync, and a failed put consumes no version number.
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute(
            "INSERT INTO key_versions (key, last_version) VALUES (?, 1) "
            "ON CONFLICT (key) DO UPDATE SET last_version = last_version + 1 "
            "RETURNING last_version",
            (key,),
        ).fetchall()[0]
        kek, wrapped, nonce, ciphertext = seal(int(version))
        conn.execute(
            "INSERT INTO envelopes (key, version, kek, wrapped_key, nonce, ciphertext, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, version, kek, wrapped, nonce, ciphertext, datetime.now(UTC).isoformat()),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return int(version)


def _store_version(
    conn: sqlite3.Connection, key: str, version: int, envelope: Envelope, created_at: datetime
) -> None:
    kek, wrapped, nonce, ciphertext = envelope
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO key_versions (key, last_version) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET "
            "last_version = max(last_version, excluded.last_version)",
            (key, version),
        )
        conn.execute(
            "INSERT OR REPLACE INTO envelopes (key, version, kek, wrapped_key, nonce, "
            "ciphertext, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, version, kek, wrapped, nonce, ciphertext, created_at.isoformat()),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _envelope(row: tuple[Any, ...]) -> Envelope:
    kek, wrapped, nonce, ciphertext = row
    return str(kek), bytes(wrapped), bytes(nonce), bytes(ciphertext)
