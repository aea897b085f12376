"""DeploymentStore on SQLite: its own table in the registries' metadata.db file.

One file keeps a single-host broker to one database to back up. The table is independent of
the registries table (no foreign key: the use cases keep the two consistent, as they will
across PostgreSQL replicas) and carries its own schema version, as the row
('deployments', N) of `component_schema`: the registries' `schema_version` table has no
component column and its reader takes max(version), so a row there would be misread. SQLite
serialises the two stores' writers on the file lock (WAL, busy timeout 5 s).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pullbroker_service.domain.deployment import (
    DeploymentRecord,
    DeploymentState,
)
from pullbroker_service.domain.errors import (
    AlreadyExists,
    DeploymentNotFound,
    EtagMismatch,
    SchemaTooNew,
)
from pullbroker_service.infra.sqlite_worker import SqliteWorker, open_private_database
from pullbroker_service.store.rows import (
    DEPLOYMENT_FIELDS,
    SQLITE,
    deployment_record,
    deployment_row,
)

T = TypeVar("T")

COMPONENT = "deployments"
SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS component_schema (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    registry_id TEXT NOT NULL,
    inline_credential INTEGER NOT NULL,
    target TEXT NOT NULL,
    state TEXT NOT NULL,
    failure_category TEXT NOT NULL,
    message TEXT NOT NULL,
    digest TEXT NOT NULL,
    creator TEXT NOT NULL,
    reported_by TEXT NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL,
    etag TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS deployments_registry ON deployments (registry_id, state);
"""
_COLUMNS = ", ".join(DEPLOYMENT_FIELDS)
_SELECT = f"SELECT {_COLUMNS} FROM deployments"  # noqa: S608 - constant column list
_TERMINATED = DeploymentState.TERMINATED.value


class SqliteDeploymentStore:
    """DeploymentStore on `db_path` (usually the broker's metadata.db)."""

    def __init__(self, db_path: Path) -> None:
        self._path = db_path
        self._worker = SqliteWorker(
            db_path, _connect, what="deployment store", thread_name="pb-deployments"
        )

    def __repr__(self) -> str:
        return f"SqliteDeploymentStore({str(self._path)!r})"

    async def create(self, record: DeploymentRecord) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state FROM deployments WHERE id = ?", (record.id,))
            found = row.fetchone()
            if found is not None and found[0] != _TERMINATED:
                raise AlreadyExists(
                    f"deployment {record.id!r} already exists: terminate it first or choose "
                    "another id"
                )
            conn.execute("DELETE FROM deployments WHERE id = ?", (record.id,))
            marks = ", ".join("?" * 14)
            conn.execute(
                f"INSERT INTO deployments ({_COLUMNS}) VALUES ({marks})",  # noqa: S608
                deployment_row(record, SQLITE),
            )

        await self._run(lambda c: _transaction(c, insert))

    async def get(self, deployment_id: str) -> DeploymentRecord:
        found = await self._run(lambda c: _one(c, f"{_SELECT} WHERE id = ?", deployment_id))
        if found is None:
            raise DeploymentNotFound(f"deployment deployments/{deployment_id} does not exist")
        return found

    async def list_page(
        self,
        page_size: int,
        after_id: str | None,
        *,
        registry_id: str | None = None,
        include_terminated: bool = False,
    ) -> list[DeploymentRecord]:
        where = ["id > ?"]
        params: list[object] = [after_id or ""]
        if registry_id is not None:
            where.append("registry_id = ?")
            params.append(registry_id)
        if not include_terminated:
            where.append("state != ?")
            params.append(_TERMINATED)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"
        return await self._run(lambda c: _many(c, sql, *params, page_size))

    async def referencing(self, registry_id: str) -> list[DeploymentRecord]:
        sql = f"{_SELECT} WHERE registry_id = ? AND state != ? ORDER BY id"
        return await self._run(lambda c: _many(c, sql, registry_id, _TERMINATED))

    async def replace(self, record: DeploymentRecord, expected_etag: str) -> None:
        if record.etag == expected_etag:
            raise ValueError("a replaced record needs a new etag")

        def update(conn: sqlite3.Connection) -> None:
            sets = ", ".join(f"{c.strip()} = ?" for c in _COLUMNS.split(",")[1:])
            cur = conn.execute(
                f"UPDATE deployments SET {sets} WHERE id = ? AND etag = ?",  # noqa: S608
                (*deployment_row(record, SQLITE)[1:], record.id, expected_etag),
            )
            if cur.rowcount == 0:
                found = conn.execute("SELECT etag FROM deployments WHERE id = ?", (record.id,))
                row = found.fetchone()
                if row is None:
                    raise DeploymentNotFound(f"deployment deployments/{record.id} does not exist")
                raise EtagMismatch(
                    f"deployment {record.id!r} was changed since it was read (its etag is now "
                    f"{row[0]}): read it again and retry",
                    current_etag=str(row[0]),
                )

        await self._run(lambda c: _transaction(c, update))

    async def delete(self, deployment_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))

        await self._run(lambda c: _transaction(c, delete))

    async def close(self) -> None:
        await self._worker.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.run(fn)


def _connect(path: Path) -> sqlite3.Connection:
    conn = open_private_database(path, synchronous="NORMAL")
    conn.executescript(_SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO component_schema (component, version) VALUES (?, ?)",
        (COMPONENT, SCHEMA_VERSION),
    )
    row = conn.execute(
        "SELECT version FROM component_schema WHERE component = ?", (COMPONENT,)
    ).fetchone()
    if row[0] > SCHEMA_VERSION:
        conn.close()
        raise SchemaTooNew(
            f"deployment store {path} has schema {row[0]}, newer than this broker's "
            f"{SCHEMA_VERSION}: upgrade pullbroker"
        )
    return conn


def _transaction(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], Any]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _one(conn: sqlite3.Connection, sql: str, *params: object) -> DeploymentRecord | None:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else deployment_record(row, SQLITE)


def _many(conn: sqlite3.Connection, sql: str, *params: object) -> list[DeploymentRecord]:
    return [deployment_record(row, SQLITE) for row in conn.execute(sql, params).fetchall()]
