"""A metadata file written by a broker before rollbacks existed opens, and gains the column."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path

from pullbroker_service.domain.model import SecretRef
from pullbroker_service.store.sqlite import SCHEMA_VERSION, SqliteMetadataStore

_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE registries (
    id TEXT PRIMARY KEY, display_name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    url TEXT NOT NULL, host TEXT NOT NULL, username TEXT NOT NULL,
    registry_ca_pem TEXT NOT NULL, region TEXT NOT NULL, allow_basic_passthrough INTEGER NOT NULL,
    credential_version INTEGER NOT NULL, secret_ref TEXT, creator TEXT NOT NULL,
    create_time TEXT NOT NULL, update_time TEXT NOT NULL, etag TEXT NOT NULL, state TEXT NOT NULL
);
INSERT INTO registries VALUES ('r1', 'acme', 'generic', 'https://reg.example', 'reg.example',
    'robot', '', '', 0, 1, '{"backend": "local", "key": "r1", "version": "1"}', 'admin',
    '2025-01-01T00:00:00+00:00', '2025-01-01T00:00:00+00:00', 'e1', 'ready');
"""


class TestUpgradeFromVersion1:
    """Schema 1 files are upgraded in place: records read back, with no previous version."""

    async def test_upgrade(self, tmp_path: Path) -> None:
        """The record reads with previous_secret_ref None; one can be stored; version is 2."""
        path = tmp_path / "metadata.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(_V1)
        store = SqliteMetadataStore(path)
        try:
            record = await store.get("r1")
            assert record.previous_secret_ref is None
            assert record.secret_ref == SecretRef("local", "r1", "1")
            previous = SecretRef("local", "r1", "0")
            await store.replace(replace(record, previous_secret_ref=previous, etag="e2"), "e1")
            assert (await store.get("r1")).previous_secret_ref == previous
        finally:
            await store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [
                (SCHEMA_VERSION,)
            ]


_V2 = (
    _V1.replace("VALUES (1);", "VALUES (2);")
    .replace("state TEXT NOT NULL\n);", "state TEXT NOT NULL,\n    previous_secret_ref TEXT\n);")
    .replace("'e1', 'ready');", "'e1', 'ready', NULL);")
)


class TestUpgradeFromVersion2:
    """Schema 2 files (before repository globs) gain the column: every record serves its whole
    host, as it did."""

    async def test_upgrade(self, tmp_path: Path) -> None:
        """The record reads with no globs; globs can be stored and read back; version is 3."""
        path = tmp_path / "metadata.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(_V2)
        store = SqliteMetadataStore(path)
        try:
            record = await store.get("r1")
            assert record.repositories == ()
            await store.replace(replace(record, repositories=("acme/*", "x/**"), etag="e2"), "e1")
            assert (await store.get("r1")).repositories == ("acme/*", "x/**")
            assert [r.display_name for r in await store.find_by_host("reg.example")] == ["acme"]
        finally:
            await store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT version FROM schema_version").fetchall() == [(3,)]
