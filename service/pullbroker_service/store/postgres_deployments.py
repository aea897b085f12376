"""DeploymentStore on PostgreSQL: the `deployments` table beside the registries.

As on SQLite there is no foreign key to registries (the use cases keep the two consistent).
Each write is one statement, so replicas cannot interleave inside it: a create is an insert
that may only replace a TERMINATED row (`ON CONFLICT (id) DO UPDATE ... WHERE state =
'terminated'`), so two replicas creating one id yield one deployment; a replace is
`UPDATE ... WHERE etag = $old RETURNING id`.
"""

from __future__ import annotations

from pullbroker_service.domain.deployment import (
    DeploymentRecord,
    DeploymentState,
)
from pullbroker_service.domain.errors import AlreadyExists, DeploymentNotFound, EtagMismatch
from pullbroker_service.store.postgres_db import Connection, PostgresDatabase
from pullbroker_service.store.rows import (
    DEPLOYMENT_FIELDS,
    POSTGRES,
    deployment_record,
    deployment_row,
)

_FIELDS = DEPLOYMENT_FIELDS
_COLUMNS = ", ".join(_FIELDS)
_SELECT = f"SELECT {_COLUMNS} FROM deployments"  # noqa: S608 - constant column list
_TERMINATED = DeploymentState.TERMINATED.value
_SETS = ", ".join(f"{c} = %s" for c in _FIELDS[1:])
_EXCLUDED = ", ".join(f"{c} = EXCLUDED.{c}" for c in _FIELDS[1:])
_CREATE = (
    f"INSERT INTO deployments ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(_FIELDS))}) "  # noqa: S608
    f"ON CONFLICT (id) DO UPDATE SET {_EXCLUDED} WHERE deployments.state = %s RETURNING id"
)
_UPSERT = (
    f"INSERT INTO deployments ({_COLUMNS}) VALUES ({', '.join(['%s'] * len(_FIELDS))}) "  # noqa: S608
    f"ON CONFLICT (id) DO UPDATE SET {_EXCLUDED}"
)
_UPDATE = f"UPDATE deployments SET {_SETS} WHERE id = %s AND etag = %s RETURNING id"  # noqa: S608


class PostgresDeploymentStore:
    """DeploymentStore on the `deployments` table of `db` (migrated before use)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    def __repr__(self) -> str:
        return f"PostgresDeploymentStore({self._db!r})"

    async def create(self, record: DeploymentRecord) -> None:
        async with self._db.connection() as conn:
            cur = await conn.execute(_CREATE, (*deployment_row(record, POSTGRES), _TERMINATED))
            if await cur.fetchone() is None:
                raise AlreadyExists(
                    f"deployment {record.id!r} already exists: terminate it first or choose "
                    "another id"
                )

    async def upsert(self, record: DeploymentRecord) -> None:
        """Insert `record`, or overwrite the deployment with its id whatever its state or
        etag (copying records from another store: a re-run writes the same rows again)."""
        async with self._db.connection() as conn:
            await conn.execute(_UPSERT, deployment_row(record, POSTGRES))

    async def get(self, deployment_id: str) -> DeploymentRecord:
        async with self._db.connection() as conn:
            found = await _many(conn, f"{_SELECT} WHERE id = %s", deployment_id)
        if not found:
            raise DeploymentNotFound(f"deployment deployments/{deployment_id} does not exist")
        return found[0]

    async def list_page(
        self,
        page_size: int,
        after_id: str | None,
        *,
        registry_id: str | None = None,
        include_terminated: bool = False,
    ) -> list[DeploymentRecord]:
        where = ["id > %s"]
        params: list[object] = [after_id or ""]
        if registry_id is not None:
            where.append("registry_id = %s")
            params.append(registry_id)
        if not include_terminated:
            where.append("state <> %s")
            params.append(_TERMINATED)
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY id LIMIT %s"
        async with self._db.connection() as conn:
            return await _many(conn, sql, *params, page_size)

    async def referencing(self, registry_id: str) -> list[DeploymentRecord]:
        sql = f"{_SELECT} WHERE registry_id = %s AND state <> %s ORDER BY id"
        async with self._db.connection() as conn:
            return await _many(conn, sql, registry_id, _TERMINATED)

    async def replace(self, record: DeploymentRecord, expected_etag: str) -> None:
        if record.etag == expected_etag:
            raise ValueError("a replaced record needs a new etag")
        async with self._db.connection() as conn:
            cur = await conn.execute(
                _UPDATE, (*deployment_row(record, POSTGRES)[1:], record.id, expected_etag)
            )
            if await cur.fetchone() is None:
                await _raise_missing_or_stale(conn, record.id)

    async def delete(self, deployment_id: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute("DELETE FROM deployments WHERE id = %s", (deployment_id,))

    async def close(self) -> None:
        """The database is shared with the other stores; its owner closes it."""


async def _raise_missing_or_stale(conn: Connection, deployment_id: str) -> None:
    cur = await conn.execute("SELECT etag FROM deployments WHERE id = %s", (deployment_id,))
    row = await cur.fetchone()
    if row is None:
        raise DeploymentNotFound(f"deployment deployments/{deployment_id} does not exist")
    raise EtagMismatch(
        f"deployment {deployment_id!r} was changed since it was read (its etag is now "
        f"{row[0]}): read it again and retry",
        current_etag=str(row[0]),
    )


async def _many(conn: Connection, sql: str, *params: object) -> list[DeploymentRecord]:
    cur = await conn.execute(sql, params)
    return [deployment_record(row, POSTGRES) for row in await cur.fetchall()]
