"""The SQLite metadata store: round trips, uniqueness, etags, paging, host lookup, read cache."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pullbroker_service.app.ambiguity import ambiguity_check
from pullbroker_service.domain.errors import AlreadyExists, EtagMismatch, RegistryNotFound
from pullbroker_service.domain.model import RecordState, RegistryKind, RegistryRecord, SecretRef
from pullbroker_service.store.base import HostCheck
from pullbroker_service.store.sqlite import SCHEMA_VERSION, SqliteMetadataStore

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(rid: str, name: str, host: str = "reg.example", **changes: object) -> RegistryRecord:
    base = RegistryRecord(
        id=rid,
        display_name=name,
        kind=RegistryKind.GENERIC,
        url=f"https://{host}",
        host=host,
        username="robot",
        registry_ca_pem="",
        region="",
        allow_basic_passthrough=False,
        credential_version=1,
        secret_ref=SecretRef("local", rid, "1"),
        creator="spiffe://pullbroker.local/admin",
        create_time=NOW,
        update_time=NOW,
        etag=f"etag-{rid}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteMetadataStore]:
    s = SqliteMetadataStore(tmp_path / "metadata.db")
    try:
        yield s
    finally:
        await s.close()


class TestRecords:
    """Records survive a round trip and the unique/etag rules hold."""

    async def test_round_trip(self, store: SqliteMetadataStore) -> None:
        """Every field, including the JSON secret reference and timestamps, comes back equal."""
        rec = record("r1", "acme", allow_basic_passthrough=True, registry_ca_pem="PEM")
        await store.create(rec)
        assert await store.get("r1") == rec
        assert await store.get_by_display_name("acme") == rec

    async def test_missing(self, store: SqliteMetadataStore) -> None:
        """Unknown ids and names raise RegistryNotFound."""
        with pytest.raises(RegistryNotFound):
            await store.get("nope")
        with pytest.raises(RegistryNotFound, match="'nope'"):
            await store.get_by_display_name("nope")

    async def test_display_name_is_unique(self, store: SqliteMetadataStore) -> None:
        """A second record with the same display name is AlreadyExists and not written."""
        await store.create(record("r1", "acme"))
        with pytest.raises(AlreadyExists, match="'acme'"):
            await store.create(record("r2", "acme"))
        assert [r.id for r in await store.list_page(10, None)] == ["r1"]

    async def test_replace_checks_etag(self, store: SqliteMetadataStore) -> None:
        """replace succeeds with the current etag and fails with a stale one."""
        rec = record("r1", "acme")
        await store.create(rec)
        renamed = replace(rec, display_name="acme2", etag="e2")
        await store.replace(renamed, rec.etag)
        with pytest.raises(EtagMismatch, match="read it again"):
            await store.replace(replace(rec, display_name="acme3", etag="e3"), rec.etag)
        assert (await store.get("r1")).display_name == "acme2"

    async def test_replace_needs_a_new_etag(self, store: SqliteMetadataStore) -> None:
        """Writing a record without changing its etag is a programming error."""
        rec = record("r1", "acme")
        await store.create(rec)
        with pytest.raises(ValueError, match="new etag"):
            await store.replace(rec, rec.etag)

    async def test_rename_onto_taken_name(self, store: SqliteMetadataStore) -> None:
        """Renaming onto another record's name is AlreadyExists."""
        await store.create(record("r1", "acme"))
        rec2 = record("r2", "beta")
        await store.create(rec2)
        with pytest.raises(AlreadyExists):
            await store.replace(replace(rec2, display_name="acme", etag="x"), rec2.etag)

    async def test_replace_missing(self, store: SqliteMetadataStore) -> None:
        """Replacing a record that does not exist is RegistryNotFound, not EtagMismatch."""
        with pytest.raises(RegistryNotFound):
            await store.replace(record("r9", "x", etag="new"), "old")

    async def test_delete(self, store: SqliteMetadataStore) -> None:
        """delete checks the etag when given; a second delete is RegistryNotFound."""
        rec = record("r1", "acme")
        await store.create(rec)
        with pytest.raises(EtagMismatch):
            await store.delete("r1", "stale")
        await store.delete("r1", rec.etag)
        with pytest.raises(RegistryNotFound):
            await store.delete("r1", None)


class TestQueries:
    """Paging is by id; host lookup sees READY records only; pending ones are listed apart."""

    async def test_paging(self, store: SqliteMetadataStore) -> None:
        """Pages are ordered by id and continue strictly after after_id."""
        for i in (3, 1, 5, 2, 4):
            await store.create(record(f"r{i}", f"name{i}"))
        first = await store.list_page(2, None)
        second = await store.list_page(2, first[-1].id)
        last = await store.list_page(2, second[-1].id)
        assert [[r.id for r in p] for p in (first, second, last)] == [
            ["r1", "r2"],
            ["r3", "r4"],
            ["r5"],
        ]

    async def test_find_by_host_ready_only(self, store: SqliteMetadataStore) -> None:
        """find_by_host returns READY records of that host; PENDING ones are in list_pending."""
        await store.create(record("r1", "a", host="reg.example"))
        await store.create(record("r2", "b", host="reg.example", state=RecordState.PENDING))
        await store.create(record("r3", "c", host="other.example"))
        assert [r.id for r in await store.find_by_host("reg.example")] == ["r1"]
        assert [r.id for r in await store.list_pending()] == ["r2"]
        assert await store.find_by_host("none.example") == []


class TestReadCache:
    """Cached reads are invalidated by this store's writes and expire after the TTL."""

    async def test_own_writes_are_seen_at_once(self, store: SqliteMetadataStore) -> None:
        """A cached host lookup reflects a create, rename and delete made through the store."""
        assert await store.find_by_host("reg.example") == []
        rec = record("r1", "acme")
        await store.create(rec)
        assert [r.id for r in await store.find_by_host("reg.example")] == ["r1"]
        await store.replace(replace(rec, display_name="renamed", etag="e2"), rec.etag)
        assert (await store.get("r1")).display_name == "renamed"
        await store.delete("r1", None)
        assert await store.find_by_host("reg.example") == []

    async def test_foreign_writes_show_after_ttl(self, tmp_path: Path) -> None:
        """A write by another process is served stale within the TTL and seen after it."""
        clock = Clock()
        db = tmp_path / "metadata.db"
        store = SqliteMetadataStore(db, cache_ttl=1.0, clock=clock)
        try:
            await store.create(record("r1", "acme"))
            assert (await store.get("r1")).display_name == "acme"
            conn = sqlite3.connect(db, isolation_level=None)
            conn.execute("UPDATE registries SET display_name = 'elsewhere' WHERE id = 'r1'")
            conn.close()
            clock.now = 0.5
            assert (await store.get("r1")).display_name == "acme"
            clock.now = 1.5
            assert (await store.get("r1")).display_name == "elsewhere"
        finally:
            await store.close()

    async def test_cached_results_are_not_shared_lists(self, store: SqliteMetadataStore) -> None:
        """Mutating a returned list does not change what the next caller gets."""
        await store.create(record("r1", "acme"))
        found = await store.find_by_host("reg.example")
        found.clear()
        assert len(await store.find_by_host("reg.example")) == 1


class TestSchema:
    """The file carries a schema version and runs in WAL mode."""

    async def test_schema_version_and_wal(self, store: SqliteMetadataStore, tmp_path: Path) -> None:
        """schema_version holds the current version and the journal mode is WAL."""
        await store.create(record("r1", "acme"))
        conn = sqlite3.connect(tmp_path / "metadata.db")
        try:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [
                (SCHEMA_VERSION,)
            ]
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            conn.close()


class TestHostCheckAcrossProcesses:
    async def test_two_stores_on_one_file_cannot_both_pass(self, tmp_path: Path) -> None:
        """Two brokers' stores on one metadata file (each its own connection and thread)
        create tying records at once; each check dawdles inside its write, so without one
        write lock over check and insert both would see an empty host. One is stored."""
        stores = [SqliteMetadataStore(tmp_path / "metadata.db", cache_ttl=0.0) for _ in "ab"]

        def dawdling(new: RegistryRecord) -> HostCheck:
            inner = ambiguity_check(new.host, new.display_name, new.repositories, new.id)

            def check(records: Sequence[RegistryRecord]) -> None:
                time.sleep(0.3)  # widen the window between the read and the write
                inner(records)

            return check

        new = [record("r1", "first"), record("r2", "second")]
        outcomes = await asyncio.gather(
            *(s.create(r, dawdling(r)) for s, r in zip(stores, new, strict=True)),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["AmbiguousRegistry", "NoneType"]
        assert len(await stores[0].find_by_host("reg.example")) == 1
        for store in stores:
            await store.close()
