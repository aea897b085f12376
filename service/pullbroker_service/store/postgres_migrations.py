"""Versioned schema migrations for PostgreSQL, kept in the repository as plain SQL files.

`migrations/NNNN_name.sql` is schema version NNNN; files are applied in order. `migrate`
runs at start-up, on every replica: inside one transaction it takes an advisory lock (so
replicas starting together migrate once, the others wait and then find nothing to do), reads
`schema_version`, refuses a database newer than this code (SchemaTooNew: upgrade the broker),
applies every file whose version it has not recorded, in order, and records each version. A
failing file rolls the whole run back. A file is never edited once released: a change is a new
file. Numbers must be unique but may leave gaps, and a file numbered below the newest applied
one is still applied when it is missing (branches developed side by side each take a number;
their files must not depend on one another's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from pullbroker_service.domain.errors import SchemaTooNew
from pullbroker_service.store.postgres_db import Connection, PostgresDatabase

# Any constant works as long as nothing else in the database uses it: "pullbroker" in ASCII.
MIGRATION_LOCK_ID = 0x70756C6C62726B
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this broker, oldest first."""
    found = []
    for entry in resources.files("pullbroker_service.store.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match is not None:
            found.append(Migration(int(match[1]), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise RuntimeError("schema migrations must be numbered uniquely, starting at 0001")
    return found


def code_schema_version() -> int:
    """The newest schema this broker knows."""
    return migrations()[-1].version


async def migrate(db: PostgresDatabase, known: list[Migration] | None = None) -> list[int]:
    """Bring the database to this code's schema; returns the versions applied now."""
    known = migrations() if known is None else known
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_ID,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY,"
            " name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = await _applied_versions(conn)
        current = max(done, default=0)
        newest = known[-1].version if known else 0
        if current > newest:
            raise SchemaTooNew(
                f"{db.name} has schema version {current}, newer than this broker's {newest} "
                "(a newer pullbroker migrated it): upgrade pullbroker"
            )
        applied = []
        for migration in known:
            if migration.version not in done:
                await conn.execute(migration.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.version)
        return applied


async def _applied_versions(conn: Connection) -> set[int]:
    cur = await conn.execute("SELECT version FROM schema_version")
    return {int(row[0]) for row in await cur.fetchall()}
