"""Several replicas on one PostgreSQL database: conditional writes race safely, migrations run
once, and a database newer than the code is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from pullbroker_service.app.ambiguity import ambiguity_check
from pullbroker_service.domain.errors import (
    AlreadyExists,
    BackendUnavailable,
    EtagMismatch,
    SchemaTooNew,
)
from pullbroker_service.store import postgres
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


class TestHostChecksAcrossReplicas:
    """The per-host check and a rename racing it on another replica."""

    async def test_rename_in_flight_cannot_free_a_name_for_a_tying_create(
        self, replicas: list[PostgresDatabase]
    ) -> None:
        """Record A ("a", no globs) is renamed to "b" on one replica while another creates a
        new "a" (no globs) on the same host. Had the check skipped same-named records
        (leaving them to the unique index), the create would wait on the index for the
        rename, then land beside the renamed record: two tying records. It is refused."""
        await migrate(replicas[0])
        first, second = PostgresMetadataStore(replicas[0]), PostgresMetadataStore(replicas[1])
        await first.create(registry("r1", "a"))
        renamer = await replicas[2].dedicated()
        try:
            await renamer.execute("BEGIN")
            await renamer.execute("UPDATE registries SET display_name = 'b' WHERE id = 'r1'")
            new = registry("r2", "a")
            create = asyncio.create_task(
                second.create(new, ambiguity_check(new.host, "a", (), new.id))
            )
            await asyncio.wait([create], timeout=1.0)  # the create's check runs meanwhile
            await renamer.execute("COMMIT")
            with pytest.raises(AlreadyExists, match="'a' already exists"):
                await create
        finally:
            await renamer.close()
        assert [r.id for r in await second.find_by_host("reg.example")] == ["r1"]
        await first.close()
        await second.close()

    async def test_a_frozen_lock_holder_costs_a_retry_not_a_stall(
        self, replicas: list[PostgresDatabase], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A session holding the host's lock and never ending (frozen, partitioned) makes a
        checked create give up after the lock timeout with BackendUnavailable (UNAVAILABLE,
        retry) that names the host; nothing is written; the next create after the holder
        left succeeds."""
        await migrate(replicas[0])
        monkeypatch.setattr(postgres, "HOST_LOCK_TIMEOUT_MS", 300)
        store = PostgresMetadataStore(replicas[0])
        holder = await replicas[1].dedicated()
        new = registry("r1", "a")
        check = ambiguity_check(new.host, "a", (), new.id)
        try:
            await holder.execute(
                "SELECT pg_advisory_lock(%s, hashtext(%s))", (postgres._HOST_LOCKS, new.host)
            )
            with pytest.raises(BackendUnavailable, match=r"host reg\.example held its turn"):
                await asyncio.wait_for(store.create(new, check), 10)
            assert await store.find_by_host(new.host) == []
        finally:
            await holder.close()
        await store.create(new, check)
        assert [r.id for r in await store.find_by_host(new.host)] == ["r1"]
        await store.close()
