"""Which stores the broker uses: SQLite files in the home folder, or one PostgreSQL database.

Without a `database` section: metadata.db (registries and deployments) and, for the local
secret backend, secrets/secrets.db. With one: the three tables of one PostgreSQL database,
migrated before anything is served (replicas starting together migrate once), and the local
secret backend's envelopes there too (its KEK stays where it is configured).
"""

from __future__ import annotations

from dataclasses import dataclass

from pullbroker_service.config.broker import BrokerConfig
from pullbroker_service.config.database import DatabaseConfig, database_url
from pullbroker_service.config.errors import ConfigError
from pullbroker_service.domain.secret_forms import derived_forms
from pullbroker_service.infra.logging import (
    get_logger,
    register_secret_value,
    register_secret_values,
)
from pullbroker_service.secrets.envelopes import EnvelopeTable
from pullbroker_service.store.audit_trail import AuditTrail
from pullbroker_service.store.base import MetadataStore
from pullbroker_service.store.changes import ChangeFeed, LocalChangeFeed
from pullbroker_service.store.deployments import DeploymentStore
from pullbroker_service.store.job_lock import JobLock, LocalJobLock
from pullbroker_service.store.postgres import PostgresMetadataStore
from pullbroker_service.store.postgres_audit import PostgresAuditTrail
from pullbroker_service.store.postgres_changes import PostgresChangeFeed
from pullbroker_service.store.postgres_db import PoolSettings, PostgresDatabase, dsn_password
from pullbroker_service.store.postgres_deployments import PostgresDeploymentStore
from pullbroker_service.store.postgres_envelopes import PostgresEnvelopeTable
from pullbroker_service.store.postgres_job_lock import PostgresJobLock
from pullbroker_service.store.postgres_migrations import migrate
from pullbroker_service.store.sqlite import SqliteMetadataStore
from pullbroker_service.store.sqlite_deployments import SqliteDeploymentStore

_log = get_logger("pullbroker_service.bootstrap.main")


@dataclass
class Stores:
    """The metadata stores and, on PostgreSQL, the envelope table and the database."""

    metadata: MetadataStore
    deployments: DeploymentStore
    changes: ChangeFeed
    """Which deployments changed: in-process on SQLite, every replica's on PostgreSQL."""
    jobs: JobLock
    """Which replica runs the periodic jobs (always this one on SQLite)."""
    envelopes: EnvelopeTable | None = None
    """Where the local secret backend keeps envelopes; None means its SQLite file."""
    database: PostgresDatabase | None = None
    audit_trail: AuditTrail | None = None
    """The shared audit trail every replica appends to (PostgreSQL only)."""

    async def close(self) -> None:
        await self.changes.close()
        await self.jobs.close()
        await self.deployments.close()
        await self.metadata.close()
        if self.database is not None:
            await self.database.close()


async def open_stores(config: BrokerConfig) -> Stores:
    """The configured stores, migrated and ready (BackendUnavailable if PostgreSQL does not
    answer at start, SchemaTooNew if a newer broker migrated it)."""
    if config.database is None:
        home = config.home
        return Stores(
            SqliteMetadataStore(home.metadata_db),
            SqliteDeploymentStore(home.metadata_db),
            LocalChangeFeed(),
            LocalJobLock(),
        )
    db = open_database(config.database)
    try:
        applied = await migrate(db)
    except BaseException:
        await db.close()
        raise
    if applied:
        _log.info("database_migrated", versions=applied)
    changes = PostgresChangeFeed(db)
    changes.start()
    return Stores(
        PostgresMetadataStore(db),
        PostgresDeploymentStore(db),
        changes,
        PostgresJobLock(db),
        PostgresEnvelopeTable(db),
        db,
        PostgresAuditTrail(db),
    )


def open_database(settings: DatabaseConfig) -> PostgresDatabase:
    """A pool on the configured database; its connection string and password are registered
    for redaction before anything could log them."""
    url = database_url(settings)
    register_secret_value(url)
    try:
        password = dsn_password(url)
    except ValueError as exc:
        raise ConfigError(f"the database connection string {exc}") from None
    if password is not None:
        # Every form a driver or server message could carry it in, as for credentials.
        register_secret_values(derived_forms(password))
    pool = PoolSettings(
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        acquire_timeout=settings.acquire_timeout_seconds,
        connect_timeout=settings.connect_timeout_seconds,
    )
    return PostgresDatabase(url, pool)
