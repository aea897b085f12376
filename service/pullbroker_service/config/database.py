"""The `database` section: PostgreSQL for metadata and the local store's ciphertexts.

Without it the broker keeps SQLite files in its home folder (one host). With it, every
replica started on the same config shares one database. The connection string may hold a
password, so, like the secret backends' credentials, it is never a value in the file: the
file names a file (a mounted Kubernetes Secret, a Vault agent sink) or an environment
variable holding it, and an inline `url` is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pullbroker_client.secret import Secret

from pullbroker_service.config.errors import ConfigError

INLINE_URL_KEYS = frozenset({"url", "dsn", "conninfo", "password"})


@dataclass(frozen=True)
class DatabaseConfig:
    """PostgreSQL, shared by every replica; exactly one of url_file and url_env."""

    url_file: Path | None = None
    """A file holding the libpq connection string, a URI (postgresql://user:pw@host/db) or
    key=value pairs; read once at start."""
    url_env: str | None = None
    """The environment variable holding the connection string instead."""
    pool_min_size: int = 1
    """Connections each replica keeps open."""
    pool_max_size: int = 10
    """Most connections each replica opens (mind the server's max_connections over all
    replicas)."""
    acquire_timeout_seconds: float = 3.0
    """A call waits this long for a connection, then fails UNAVAILABLE with retry-after."""
    connect_timeout_seconds: float = 3.0
    """Timeout of each new connection to the server."""


def validate_database(db: DatabaseConfig) -> None:
    if (db.url_file is None) == (db.url_env is None):
        raise ConfigError(
            "database needs exactly one of database.url_file (a 0600 file holding the "
            "connection string) or database.url_env (a variable holding it)"
        )
    if db.url_env is not None and not db.url_env.isidentifier():
        raise ConfigError(f"database.url_env {db.url_env!r} is not a variable name")
    if not 1 <= db.pool_min_size <= db.pool_max_size:
        raise ConfigError("database.pool_min_size must be at least 1 and at most pool_max_size")
    for name in ("acquire_timeout_seconds", "connect_timeout_seconds"):
        if getattr(db, name) <= 0:
            raise ConfigError(f"database.{name} must be more than 0 seconds")


def database_url(db: DatabaseConfig) -> Secret:
    """The connection string from its file or variable (ConfigError names where, never what)."""
    if db.url_file is not None:
        try:
            text = db.url_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read database.url_file {db.url_file}: {exc.strerror}"
            ) from None
        where = f"database.url_file {db.url_file}"
    else:
        assert db.url_env is not None  # validate_database checked it
        text = os.environ.get(db.url_env, "").strip()
        where = f"the variable {db.url_env} (database.url_env)"
    if not text:
        raise ConfigError(f"{where} is empty: it must hold a PostgreSQL connection string")
    return Secret(text)


def inline_url_message(name: str) -> str:
    """Why the setting `name` may not be in the file, and what to write instead."""
    return (
        f"{name} would put the database connection string or its password inline; "
        "the config file never holds secrets (it is read by people, backups and "
        "config management): write `url_file: /path/to/a/0600/file` or `url_env: VARIABLE` "
        "under database"
    )
