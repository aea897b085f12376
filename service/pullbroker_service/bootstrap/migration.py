"""`pullbroker secrets migrate`: credentials from one secret backend to another
(`run_migration`), or the home's SQLite metadata and local envelopes into PostgreSQL
(`run_database_move`), each with the home folder's lock held exclusively, which a running
broker holds shared.

While one runs, a marker file in the home says so; `check_secret_references`, which a broker
runs before it serves, refuses to start over an unfinished one, or when every stored
credential is in another backend than the configured one.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime

from pullbroker_client.home import Home

from pullbroker_service.app.migrate import Migration, MigrationReport
from pullbroker_service.app.move_to_database import DatabaseMove, MoveReport
from pullbroker_service.bootstrap.broker_home import (
    HomeLock,
    database_move_record,
    migration_marker,
    prepare_home,
)
from pullbroker_service.bootstrap.closers import Closer, close_all
from pullbroker_service.bootstrap.stores import open_stores
from pullbroker_service.config.broker import BrokerConfig, ConfigError
from pullbroker_service.domain.errors import BackendMismatch
from pullbroker_service.infra.logging import configure_logging, get_logger
from pullbroker_service.secrets.factory import GuardedBackend, build_secret_backend
from pullbroker_service.secrets.sqlite_envelopes import SqliteEnvelopeTable
from pullbroker_service.store.base import MetadataStore
from pullbroker_service.store.postgres import PostgresMetadataStore
from pullbroker_service.store.postgres_deployments import PostgresDeploymentStore
from pullbroker_service.store.sqlite import SqliteMetadataStore
from pullbroker_service.store.sqlite_deployments import SqliteDeploymentStore

_log = get_logger("pullbroker_service.bootstrap.main")


async def check_secret_references(home: Home, store: MetadataStore, backend: str) -> None:
    """Refuse to serve over an unfinished migration, or when every stored credential is in
    another backend than the configured one (the configuration was not switched)."""
    marker = migration_marker(home)
    if marker.exists():
        command = "--to BACKEND"
        with suppress(OSError, ValueError):
            if json.loads(marker.read_text(encoding="utf-8")).get("to") == "database":
                command = "--to-database"
        raise BackendMismatch(
            f"a secrets migration on {home.root} did not finish ({marker.name} is present): "
            f"run `pullbroker secrets migrate {command}` again to finish it"
        )
    counts = await _backend_counts(store)
    foreign = {name: n for name, n in counts.items() if name != backend}
    if not foreign:
        return
    where = ", ".join(f"{n} in {name}" for name, n in sorted(foreign.items()))
    if not counts[backend]:
        raise BackendMismatch(
            f"every stored credential is in another backend ({where}) but secret_backend is "
            f"{backend}: set secret_backend to where they are, or move them with "
            f"`pullbroker secrets migrate --to {backend}`"
        )
    _log.error("secret_references_foreign_backend", backend=backend, elsewhere=foreign)


async def run_migration(
    config: BrokerConfig, target: str, progress: Callable[[str], None]
) -> MigrationReport:
    """`pullbroker secrets migrate --to TARGET`, with the home locked against brokers."""
    home = config.home
    prepare_home(home)
    configure_logging(log_file=home.logs_dir / "migrate.log", level=config.log_level, stderr=False)
    lock = HomeLock.acquire(home, exclusive=True)
    try:
        stores = await open_stores(config)
    except BaseException:
        await lock.release()
        raise
    store = stores.metadata
    backends: dict[str, GuardedBackend] = {}
    try:
        names = {config.secrets.backend, target} | set(await _backend_counts(store))
        for name in sorted(names):
            backends[name] = build_secret_backend(
                config.secrets, home, name, envelopes=stores.envelopes
            )
        await backends[target].check()  # before the marker: an unreachable target changes nothing
        marker = migration_marker(home)
        started = {"to": target, "started": datetime.now(UTC).isoformat(), "pid": os.getpid()}
        marker.write_text(json.dumps(started) + "\n", encoding="utf-8")
        report = await Migration(store, backends, backends[target], progress=progress).run()
        marker.unlink()  # every record was visited: what failed needs a person, not a re-run
        return report
    finally:
        await close_all([lock.release, stores.close, *(b.close for b in backends.values())])


async def run_database_move(config: BrokerConfig) -> MoveReport:
    """`pullbroker secrets migrate --to-database`: the home's SQLite metadata and local
    envelopes into the configured PostgreSQL database, with the home locked against brokers.
    The migration marker stays until the copy is verified, so no broker starts on half of it."""
    if config.database is None:
        raise ConfigError("--to-database needs a `database` section in the config file")
    home = config.home
    prepare_home(home)
    configure_logging(log_file=home.logs_dir / "migrate.log", level=config.log_level, stderr=False)
    lock = HomeLock.acquire(home, exclusive=True)
    closers: list[Closer] = [lock.release]
    try:
        done = database_move_record(home)
        if done.exists():
            raise BackendMismatch(
                f"the metadata of {home.root} was already moved to the database "
                f"({done.name}): brokers on the database may have changed it since, and a "
                "second copy would overwrite that with the older SQLite records"
            )
        target = await open_stores(config)
        closers.append(target.close)
        registries = SqliteMetadataStore(home.metadata_db)
        deployments = SqliteDeploymentStore(home.metadata_db)
        closers += [registries.close, deployments.close]
        envelopes = SqliteEnvelopeTable(home.secrets_db) if home.secrets_db.exists() else None
        if envelopes is not None:
            closers.append(envelopes.close)
        marker = migration_marker(home)
        started = {"to": "database", "started": datetime.now(UTC).isoformat(), "pid": os.getpid()}
        marker.write_text(json.dumps(started) + "\n", encoding="utf-8")
        # config.database is set: open_stores opened the PostgreSQL stores.
        assert isinstance(target.metadata, PostgresMetadataStore)
        assert isinstance(target.deployments, PostgresDeploymentStore)
        move = DatabaseMove(
            registries,
            deployments,
            envelopes,
            target.metadata,
            target.deployments,
            target.envelopes,
        )
        report = await move.run()
        finished = {"finished": datetime.now(UTC).isoformat(), "pid": os.getpid()}
        done.write_text(json.dumps(finished) + "\n", encoding="utf-8")
        marker.unlink()
        return report
    finally:
        await close_all(closers)


async def _backend_counts(store: MetadataStore) -> Counter[str]:
    """How many records reference each secret backend."""
    counts: Counter[str] = Counter()
    after: str | None = None
    while page := await store.list_page(500, after):
        after = page[-1].id
        counts.update(r.secret_ref.backend for r in page if r.secret_ref is not None)
    return counts
