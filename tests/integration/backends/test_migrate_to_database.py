"""`pullbroker secrets migrate --to-database`: a home's SQLite metadata and local envelopes
move into a real PostgreSQL database, verified and resumable, and a broker started on the
database serves what the SQLite broker did."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from pullbroker.v1 import registry_pb2
from pullbroker_client.broker import basic_credential
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_service.bootstrap.broker_home import migration_marker
from pullbroker_service.bootstrap.migration import run_database_move
from pullbroker_service.cli import main as cli_main
from pullbroker_service.config.broker import load_config
from pullbroker_service.domain.errors import BackendMismatch, BackendUnavailable, MigrationMismatch
from pullbroker_service.domain.model import RegistryRecord
from pullbroker_service.store.postgres import PostgresMetadataStore

from tests.harness.broker_config import TEST_SETTINGS
from tests.harness.postgres import PostgresServer
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.integration.backends.test_broker_backends import (
    InProcessBroker,
    broker_config,
    generic,
    login,
    manifest_status,
)
from tests.integration.backends.test_broker_postgres import write_config as write_pg_config
from tests.integration.lifecycle.node import deployment

pytestmark = pytest.mark.integration


class World:
    """A home populated by a broker on SQLite, and a config naming a fresh database."""

    def __init__(
        self,
        tmp_path: Path,
        postgres: PostgresServer,
        registry: TokenAuthRegistry,
        images: StandardImages,
    ) -> None:
        self.home = Home(tmp_path / "home")
        self.sqlite_config = tmp_path / "etc" / "sqlite.yaml"
        self.sqlite_config.parent.mkdir(parents=True)
        self.sqlite_config.write_text(yaml.safe_dump(TEST_SETTINGS))
        self.pg_config = write_pg_config(tmp_path / "etc", postgres)
        self.registry = registry
        self.image = images.app.reference

    def broker(self, on_database: bool) -> InProcessBroker:
        path = self.pg_config if on_database else self.sqlite_config
        return InProcessBroker(broker_config(self.home, path))

    def populate(self) -> dict[str, Any]:
        """Two registries (`two` rotated: it has a previous version) and a deployment; what
        GetRegistry and GetDeployment answer."""
        broker = self.broker(on_database=False)
        try:
            with broker.client() as admin:
                admin.create_registry(
                    generic("one", self.registry, "one/*"), login(self.registry, ALICE)
                )
                two = admin.create_registry(
                    generic("two", self.registry, "team/*"), login(self.registry, BOB)
                )
                rotated = admin.update_registry(
                    registry_pb2.Registry(name=two.name, etag=two.etag),
                    (),
                    basic_credential(BOB, Secret(self.registry.users[BOB])),
                )
                assert rotated.credential_version == two.credential_version + 1
                admin.create_deployment("web", deployment(self.image, "two"))
                return {
                    "one": admin.get_registry("one"),
                    "two": admin.get_registry("two"),
                    "web": admin.get_deployment("web"),
                }
        finally:
            broker.stop()

    def migrate(self) -> int:
        argv = ["secrets", "migrate", "--to-database", "--config", str(self.pg_config)]
        return cli_main([*argv, "--home", str(self.home.root)])


@pytest.fixture
def world(
    tmp_path: Path,
    postgres: PostgresServer,
    token_registry: TokenAuthRegistry,
    pushed_images: StandardImages,
) -> World:
    return World(tmp_path, postgres, token_registry, pushed_images)


class TestMigrateToDatabase:
    def test_interrupted_then_resumed_and_served(
        self,
        world: World,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The copy breaks after one record; the marker keeps a broker from starting on half
        a database; the re-run completes, verified, without duplicates; a broker on the
        database serves both registries (the rotated one's previous version came along)."""
        before = world.populate()
        sqlite_files = {p: p.read_bytes() for p in (world.home.metadata_db, world.home.secrets_db)}

        real_upsert = PostgresMetadataStore.upsert
        calls: list[str] = []

        async def breaking_upsert(self: PostgresMetadataStore, record: RegistryRecord) -> None:
            if calls:
                raise BackendUnavailable("simulated: the database went away", retry_after=None)
            calls.append(record.id)
            await real_upsert(self, record)

        monkeypatch.setattr(PostgresMetadataStore, "upsert", breaking_upsert)
        assert world.migrate() == 1
        assert "the move to the database stopped" in capsys.readouterr().err
        assert calls, "one record was copied before the interruption"
        assert migration_marker(world.home).exists()
        with pytest.raises(BackendMismatch, match=r"did not finish.*--to-database"):
            world.broker(on_database=True)
        monkeypatch.setattr(PostgresMetadataStore, "upsert", real_upsert)

        assert world.migrate() == 0
        out = capsys.readouterr().out
        assert "copied and verified 2 registries, 1 deployments and 3 secret envelopes" in out
        assert not migration_marker(world.home).exists()
        assert world.migrate() == 1, "once verified, the database is the newer copy"
        assert "already moved to the database" in capsys.readouterr().err
        for path, content in sqlite_files.items():
            assert path.read_bytes() == content, f"{path.name} was only read"

        broker = world.broker(on_database=True)
        try:
            with broker.client() as admin, broker.client("node") as node:
                assert [r.display_name for r in admin.iter_registries()] == ["one", "two"]
                for name in ("one", "two"):
                    assert admin.get_registry(name) == before[name]
                assert admin.get_deployment("web") == before["web"]
                token = node.issue_pull_token(world.image, registry="two", force_refresh=True)
                assert manifest_status(world.registry, token.token, "team/app") == 200
                node.issue_pull_token(world.image, registry="one", force_refresh=True)
                # The previous version came along: the rotation can be rolled back.
                admin.rollback_registry(before["two"].name, before["two"].etag)
                token = node.issue_pull_token(world.image, registry="two", force_refresh=True)
                assert manifest_status(world.registry, token.token, "team/app") == 200
        finally:
            broker.stop()

    def test_refused_while_a_broker_runs(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        broker = world.broker(on_database=False)
        try:
            assert world.migrate() == 1
        finally:
            broker.stop()
        assert "a broker is running" in capsys.readouterr().err
        assert not migration_marker(world.home).exists()

    def test_a_difference_stops_it_naming_the_field(
        self, world: World, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A copy that reads back differently: MigrationMismatch names the record and field;
        the marker stays, so no broker starts on the database."""
        world.populate()
        real_upsert = PostgresMetadataStore.upsert

        async def altering_upsert(self: PostgresMetadataStore, record: RegistryRecord) -> None:
            await real_upsert(self, replace(record, username="someone-else"))

        monkeypatch.setattr(PostgresMetadataStore, "upsert", altering_upsert)
        config = load_config(home=world.home, config_file=world.pg_config)
        with pytest.raises(MigrationMismatch, match="field username differs"):
            asyncio.run(run_database_move(config))
        assert migration_marker(world.home).exists()
