"""Several replicas on one PostgreSQL database: conditional writes race safely, migrations run
once, and a database newer than the code is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from pullbroker_service.domain.errors import AlreadyExists, EtagMismatch, SchemaTooNew
from pullbroker_service.store.postgres import PostgresMetadataStore
from pullbroker_service.store.postgres_db import PostgresDatabase
from pullbroker_service.store.postgres_deployments import PostgresDeploymentStore
from pullbroker_service.store.postgres_migrations import (
    Migration,
    code_schema_version,
    migrate,
    migrations,
)

from tests.harness.postgres import PostgresServer
from tests.integration.store.conftest import registry
from tests.integration.store.test_store_contract import deployment

pytestmark = pytest.mark.integration
REPLICAS = 5


@pytest.fixture
async def replicas(postgres: PostgresServer) -> AsyncIterator[list[PostgresDatabase]]:
    """REPLICAS pools on one fresh database, as REPLICAS broker processes would hold."""
    name = postgres.create_database()
    pools = [PostgresDatabase(postgres.dsn(name)) for _ in range(REPLICAS)]
    try:
        yield pools
    finally:
        for pool in pools:
            await pool.close()


class TestMigrations:
    """Start-up migrations: once, under a lock, and never onto a newer schema."""

    async def test_replicas_starting_together_migrate_once(
        self, replicas: list[PostgresDatabase], postgres: PostgresServer
    ) -> None:
        """Concurrent start-ups apply each version exactly once; the rest find nothing to do."""
        applied = await asyncio.gather(*(migrate(db) for db in replicas))
        every = [m.version for m in migrations()]
        assert sorted(applied, key=len) == [[]] * (REPLICAS - 1) + [every]

    async def test_newer_schema_is_refused(
        self, replicas: list[PostgresDatabase], postgres: PostgresServer
    ) -> None:
        """A database a newer broker migrated stops this one with SchemaTooNew (upgrade)."""
        await migrate(replicas[0])
        newer = code_schema_version() + 1
        async with replicas[0].connection() as conn:
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, 'future')", (newer,)
            )
        with pytest.raises(SchemaTooNew, match="upgrade pullbroker") as raised:
            await migrate(replicas[1])
        assert raised.value.retry_after is None

    async def test_a_missing_lower_number_is_applied_later(
        self, replicas: list[PostgresDatabase]
    ) -> None:
        """Branches merged in either order: a database at 0001 and 0003 still gets a 0002
        shipped afterwards, and a second run finds nothing to do."""
        shipped = migrations()
        gap = [m for m in shipped if m.version != 2]
        assert await migrate(replicas[0], gap) == [m.version for m in gap]
        late = Migration(2, "0002_late.sql", "CREATE TABLE late_branch (id TEXT PRIMARY KEY);")
        merged = sorted([*gap, late], key=lambda m: m.version)
        assert await migrate(replicas[1], merged) == [2]
        assert await migrate(replicas[0], merged) == []


class TestRaces:
    """Conflicting writes through different replicas: one wins, nothing is lost silently."""

    async def test_conflicting_updates_one_wins(self, replicas: list[PostgresDatabase]) -> None:
        """Of N updates from the same etag, one wins; the others get EtagMismatch carrying the
        winner's etag."""
        await migrate(replicas[0])
        stores = [PostgresMetadataStore(db) for db in replicas]
        rec = registry("r1", "acme")
        await stores[0].create(rec)
        updates = [
            s.replace(replace(rec, username=f"u{i}", etag=f"e{i}"), rec.etag)
            for i, s in enumerate(stores)
        ]
        results = await asyncio.gather(*updates, return_exceptions=True)
        winners = [i for i, r in enumerate(results) if r is None]
        assert len(winners) == 1
        stored = await stores[-1].get("r1")
        assert stored.etag == f"e{winners[0]}"
        assert stored.username == f"u{winners[0]}"
        losers = [r for r in results if r is not None]
        assert all(isinstance(r, EtagMismatch) for r in losers)
        assert {r.current_etag for r in losers if isinstance(r, EtagMismatch)} == {stored.etag}

    async def test_same_name_created_once(self, replicas: list[PostgresDatabase]) -> None:
        """Creates of one display name racing on N replicas yield one record."""
        await migrate(replicas[0])
        stores = [PostgresMetadataStore(db) for db in replicas]
        creates = [s.create(registry(f"r{i}", "acme")) for i, s in enumerate(stores)]
        results = await asyncio.gather(*creates, return_exceptions=True)
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
        assert len(await stores[0].list_page(10, None)) == 1

    async def test_same_deployment_created_once(self, replicas: list[PostgresDatabase]) -> None:
        """Creates of one deployment id racing on N replicas yield one deployment."""
        await migrate(replicas[0])
        stores = [PostgresDeploymentStore(db) for db in replicas]
        creates = [s.create(deployment("d1", image=f"img{i}")) for i, s in enumerate(stores)]
        results = await asyncio.gather(*creates, return_exceptions=True)
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, AlreadyExists) for r in results if r is not None)
        winner = next(i for i, r in enumerate(results) if r is None)
        assert (await stores[0].get("d1")).image == f"img{winner}"

    async def test_writes_are_read_at_once_elsewhere(
        self, replicas: list[PostgresDatabase]
    ) -> None:
        """What one replica writes, another reads on its very next call."""
        await migrate(replicas[0])
        one, other = PostgresMetadataStore(replicas[0]), PostgresMetadataStore(replicas[1])
        rec = registry("r1", "acme")
        await one.create(rec)
        assert (await other.get_by_display_name("acme")).id == "r1"
        await one.replace(replace(rec, username="new", etag="e2"), rec.etag)
        assert (await other.get("r1")).username == "new"
        await one.delete("r1", "e2")
        assert await other.find_by_host(rec.host) == []
