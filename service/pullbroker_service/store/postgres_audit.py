"""AuditTrail on PostgreSQL: the `audit_events` table (migration 0002), INSERT and SELECT only.

A batch is one multi-row INSERT in one transaction: it lands whole or not at all. Sequence
numbers come from an identity column, so they order events by arrival across replicas
(a reader following the trail resumes after the last one it saw).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from pullbroker_service.domain.audit import FIELDS
from pullbroker_service.store.audit_trail import AuditQuery, StoredAuditEvent
from pullbroker_service.store.postgres_db import PostgresDatabase

_COLUMNS = (*FIELDS, "replica")
_INSERT = (
    f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) "  # noqa: S608 - constant columns
    f"VALUES ({', '.join(['%s'] * len(_COLUMNS))})"
)
_SELECT = f"SELECT seq, {', '.join(_COLUMNS)} FROM audit_events"  # noqa: S608
MAX_READ = 1000


class PostgresAuditTrail:
    """The shared audit trail in `db` (migrated before use)."""

    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def append(self, events: Sequence[Mapping[str, str]], replica: str) -> None:
        rows = [(*(event.get(f, "") for f in FIELDS), replica) for event in events]
        if not rows:
            return
        async with self._db.transaction() as conn, conn.cursor() as cur:
            await cur.executemany(_INSERT, rows)

    async def read(self, query: AuditQuery) -> list[StoredAuditEvent]:
        where, params = _where(query)
        order = "DESC" if query.last else "ASC"
        sql = f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY seq {order} LIMIT %s"
        async with self._db.connection() as conn:
            cur = await conn.execute(sql.encode(), (*params, min(query.limit, MAX_READ)))
            rows = await cur.fetchall()
        events = [
            StoredAuditEvent(int(row[0]), dict(zip(_COLUMNS, map(_text, row[1:]), strict=True)))
            for row in rows
        ]
        return sorted(events, key=lambda e: e.seq)


def _where(query: AuditQuery) -> tuple[list[str], list[object]]:
    where: list[str] = ["seq > %s"]
    params: list[object] = [query.after]
    if query.identity:
        where.append("identity LIKE %s ESCAPE '\\'")
        params.append(_like(query.identity))
    if query.outcome:
        where.append("outcome = %s")
        params.append(query.outcome)
    if query.registry:
        where.append("(registry = %s OR registry = %s OR registry LIKE %s ESCAPE '\\')")
        params += [query.registry, f"registries/{query.registry}", _like(query.registry)]
    return where, params


def _like(glob: str) -> str:
    """A glob (`*`, `?`) as a LIKE pattern, LIKE's own wildcards escaped."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _text(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds")
    return str(value)
