"""The `database` section: where the connection string comes from, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pullbroker_client.home import Home
from pullbroker_service.config.broker import BrokerConfig, ConfigError, load_config
from pullbroker_service.config.database import database_url
from pullbroker_service.store.postgres_migrations import code_schema_version, migrations

DSN = "postgresql://pb:s3cret-pw@db.internal:5432/pullbroker?sslmode=verify-full"


def load(tmp_path: Path, text: str) -> BrokerConfig:
    path = tmp_path / "broker.yaml"
    path.write_text(text)
    return load_config(home=Home(tmp_path / "home"), config_file=path)


class TestDatabaseSection:
    """The connection string comes from a file or a variable, never from the file itself."""

    def test_absent_means_sqlite(self, tmp_path: Path) -> None:
        """Without the section there is no database (SQLite files in the home folder)."""
        assert load(tmp_path, "log_level: info\n").database is None

    def test_url_file_relative_to_the_config(self, tmp_path: Path) -> None:
        """url_file is read relative to the config file's folder, as other paths are."""
        (tmp_path / "db-url").write_text(DSN + "\n")
        config = load(tmp_path, "database: {url_file: db-url, pool_max_size: 4}\n")
        assert config.database is not None
        assert config.database.pool_max_size == 4
        assert database_url(config.database).reveal() == DSN

    def test_url_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """url_env names the variable holding it; the Secret never renders it."""
        monkeypatch.setenv("PB_DATABASE_URL", DSN)
        config = load(tmp_path, "database: {url_env: PB_DATABASE_URL}\n")
        assert config.database is not None
        url = database_url(config.database)
        assert url.reveal() == DSN
        assert "s3cret" not in repr(url)
        assert "s3cret" not in str(url)

    @pytest.mark.parametrize("key", ["url", "dsn", "password"])
    def test_inline_connection_string_refused(self, tmp_path: Path, key: str) -> None:
        """An inline url (or password) is refused, and the message does not repeat it."""
        with pytest.raises(ConfigError, match="url_file") as raised:
            load(tmp_path, f"database: {{{key}: '{DSN}'}}\n")
        assert "s3cret" not in str(raised.value)

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("database: {}\n", "exactly one of"),
            ("database: {url_file: a, url_env: B}\n", "exactly one of"),
            ("database: {url_env: 'not a name'}\n", "not a variable name"),
            ("database: {url_env: X, pool_min_size: 5, pool_max_size: 2}\n", "pool_min_size"),
        ],
    )
    def test_invalid(self, tmp_path: Path, text: str, fragment: str) -> None:
        """Each mistake is named."""
        with pytest.raises(ConfigError, match=fragment):
            load(tmp_path, text)

    def test_empty_or_missing_source(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """An unreadable file or an empty variable is a ConfigError naming where, not what."""
        monkeypatch.setenv("PB_EMPTY", "")
        config = load(tmp_path, "database: {url_env: PB_EMPTY}\n")
        assert config.database is not None
        with pytest.raises(ConfigError, match="PB_EMPTY"):
            database_url(config.database)
        config = load(tmp_path, "database: {url_file: missing}\n")
        assert config.database is not None
        with pytest.raises(ConfigError, match="cannot read"):
            database_url(config.database)


class TestMigrationFiles:
    """The shipped migrations are numbered uniquely from 0001 and found as package data."""

    def test_numbered_from_one(self) -> None:
        """0001, then increasing unique numbers (gaps allowed: branches each take one), and
        the code's schema version is the last one."""
        found = migrations()
        versions = [m.version for m in found]
        assert versions == sorted(set(versions))
        assert 3 in versions
        assert found[0].name == "0001_init.sql"
        assert code_schema_version() == found[-1].version
