"""The metadata stores and the envelope table on both databases: SQLite files and PostgreSQL.

`stores` is parametrized, so every test that takes it runs once per database; PostgreSQL
tests each get a fresh, migrated database on the session's server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pullbroker_service.domain.model import RecordState, RegistryKind, RegistryRecord, SecretRef
from pullbroker_service.secrets.envelopes import EnvelopeTable
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.secrets.sqlite_envelopes import SqliteEnvelopeTable
from pullbroker_service.store.base import MetadataStore
from pullbroker_service.store.deployments import DeploymentStore
from pullbroker_service.store.postgres import PostgresMetadataStore
from pullbroker_service.store.postgres_db import PostgresDatabase
from pullbroker_service.store.postgres_deployments import PostgresDeploymentStore
from pullbroker_service.store.postgres_envelopes import PostgresEnvelopeTable
from pullbroker_service.store.postgres_migrations import migrate
from pullbroker_service.store.sqlite import SqliteMetadataStore
from pullbroker_service.store.sqlite_deployments import SqliteDeploymentStore

from tests.harness.postgres import PostgresServer

pytestmark = pytest.mark.integration

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@dataclass
class Stores:
    """One database's stores, as the broker wires them."""

    kind: str
    metadata: MetadataStore
    deployments: DeploymentStore
    secrets: LocalSecretBackend
    envelopes: EnvelopeTable
    """The table under `secrets`."""


def registry(rid: str, name: str, host: str = "reg.example", **changes: object) -> RegistryRecord:
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
        state=RecordState.READY,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


async def migrated(server: PostgresServer) -> PostgresDatabase:
    """A pool on a fresh database of `server`, migrated."""
    db = PostgresDatabase(server.dsn(server.create_database()))
    await migrate(db)
    return db


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """The stores on SQLite, then on PostgreSQL."""
    wrapper = FileKeyWrapper.open(tmp_path / "kek.key")
    if request.param == "sqlite":
        table: EnvelopeTable = SqliteEnvelopeTable(tmp_path / "secrets.db")
        made = Stores(
            "sqlite",
            SqliteMetadataStore(tmp_path / "metadata.db", cache_ttl=0.0),
            SqliteDeploymentStore(tmp_path / "metadata.db"),
            LocalSecretBackend(table, wrapper),
            table,
        )
        db = None
    else:
        db = await migrated(request.getfixturevalue("postgres"))
        table = PostgresEnvelopeTable(db)
        made = Stores(
            "postgres",
            PostgresMetadataStore(db),
            PostgresDeploymentStore(db),
            LocalSecretBackend(table, wrapper),
            table,
        )
    try:
        yield made
    finally:
        await made.secrets.close()
        await made.deployments.close()
        await made.metadata.close()
        if db is not None:
            await db.close()
