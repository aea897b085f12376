"""A broker refuses SQLite files written by a newer broker instead of misreading them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from pullbroker_service.domain.errors import BackendUnavailable
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore


def bump(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (99)")


class TestNewerSchema:
    """Each SQLite-backed adapter checks the file's schema version when it opens it."""

    async def test_metadata_store(self, tmp_path: Path) -> None:
        """A metadata.db of schema 99 is refused with 'upgrade pullbroker'."""
        db = tmp_path / "metadata.db"
        store = SqliteMetadataStore(db)
        await store.list_page(1, None)  # creates the file at this broker's version
        await store.close()
        bump(db)
        newer = SqliteMetadataStore(db)
        with pytest.raises(BackendUnavailable, match=r"schema 99.*upgrade pullbroker"):
            await newer.list_page(1, None)
        await newer.close()

    async def test_local_secret_store(self, tmp_path: Path) -> None:
        """A secrets.db of schema 99 is refused with 'upgrade pullbroker'."""
        db = tmp_path / "secrets.db"
        wrapper = FileKeyWrapper.open(tmp_path / "kek.key")
        backend = LocalSecretBackend(db, wrapper)
        await backend.put("reg1", b"x")
        await backend.close()
        bump(db)
        newer = LocalSecretBackend(db, FileKeyWrapper.open(tmp_path / "kek.key"))
        with pytest.raises(BackendUnavailable, match=r"schema 99.*upgrade pullbroker"):
            await newer.put("reg1", b"y")
        await newer.close()
