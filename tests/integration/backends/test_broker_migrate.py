"""`pullbroker secrets migrate`: local -> vault -> aws -> local with real servers, each of the
first two hops interrupted by the target stopping in the middle, then resumed; between hops a
broker on the new backend mints working tokens for every registry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from pullbroker_client.home import Home
from pullbroker_service.bootstrap.broker_home import migration_marker
from pullbroker_service.bootstrap.migration import run_migration
from pullbroker_service.cli import main as cli_main
from pullbroker_service.config.broker import load_config
from pullbroker_service.domain.errors import BackendMismatch, BackendUnavailable
from pullbroker_service.secrets.factory import build_secret_backend

from tests.harness.canary import find_in_tree
from tests.harness.moto_server import MotoServer
from tests.harness.registry import TokenAuthRegistry
from tests.harness.standard import ALICE, BOB, StandardImages
from tests.integration.backends.conftest import VaultWorld
from tests.integration.backends.test_broker_backends import (
    BACKENDS,
    InProcessBroker,
    broker_config,
    generic,
    login,
    manifest_status,
    pause,
    raft,
    resume,
    write_config,
)

pytestmark = pytest.mark.integration
USERS = {"one": ALICE, "two": BOB, "three": ALICE}


class World:
    """One home, one config file per backend (every section present), the real servers."""

    def __init__(
        self,
        tmp_path: Path,
        prefix: str,
        vault: VaultWorld,
        moto: MotoServer,
        registry: TokenAuthRegistry,
        images: StandardImages,
    ) -> None:
        self.home = Home(tmp_path / "home")
        self.configs = {
            name: write_config(tmp_path / "etc", name, prefix=prefix, vault=vault, moto=moto)
            for name in BACKENDS
        }
        self.registry = registry
        self.image = images.app.reference

    def broker(self, backend: str) -> InProcessBroker:
        return InProcessBroker(broker_config(self.home, self.configs[backend]))

    def serves_everything_from(self, backend: str) -> None:
        """A broker on `backend` mints a working token for every registry from it."""
        broker = self.broker(backend)
        try:
            with broker.client("node") as node:
                for name in USERS:
                    token = node.issue_pull_token(self.image, registry=name, force_refresh=True)
                    assert manifest_status(self.registry, token.token, "team/app") == 200
            assert len(broker.run(broker.secrets.list_keys())) == len(USERS)
        finally:
            broker.stop()

    def keys_in(self, backend: str) -> list[str]:
        config = load_config(home=self.home, config_file=self.configs[backend])
        secrets = build_secret_backend(config.secrets, self.home)

        async def keys() -> list[str]:
            try:
                return await secrets.list_keys()
            finally:
                await secrets.close()

        return asyncio.run(keys())

    def migrate(self, source: str, target: str) -> int:
        argv = ["secrets", "migrate", "--to", target, "--config", str(self.configs[source])]
        return cli_main([*argv, "--home", str(self.home.root)])

    def interrupted(self, source: str, target: str, stop_target: Callable[[], None]) -> None:
        """Migrate, stopping the target's server right after the first record moved."""
        config = load_config(home=self.home, config_file=self.configs[source])
        lines: list[str] = []

        def progress(line: str) -> None:
            lines.append(line)
            if len(lines) == 1:
                stop_target()

        with pytest.raises(BackendUnavailable):
            asyncio.run(run_migration(config, target, progress))
        assert lines[0].startswith("moved ")
        assert migration_marker(self.home).exists()
        with pytest.raises(BackendMismatch, match="did not finish"):
            self.broker(target)


@pytest.fixture
def world(
    tmp_path: Path,
    prefix: str,
    vault_raft: VaultWorld,
    moto: MotoServer,
    token_registry: TokenAuthRegistry,
    pushed_images: StandardImages,
) -> World:
    return World(tmp_path, prefix, vault_raft, moto, token_registry, pushed_images)


class TestMigrate:
    """Every credential moves, verified, through interruptions, and the broker follows."""

    def test_refused_while_a_broker_runs(
        self, world: World, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The migration needs the broker stopped and says so."""
        broker = world.broker("local")
        try:
            assert world.migrate("local", "vault") == 1
        finally:
            broker.stop()
        assert "a broker is running" in capsys.readouterr().err
        assert not migration_marker(world.home).exists()

    def test_local_vault_aws_and_back(
        self,
        world: World,
        vault_raft: VaultWorld,
        moto: MotoServer,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Three registries travel local -> vault -> aws -> local; each hop leaves the old
        backend empty and a broker on the new one serves them all."""
        broker = world.broker("local")
        try:
            with broker.client() as admin:
                for name, user in USERS.items():
                    admin.create_registry(
                        generic(name, world.registry, f"{name}/*"), login(world.registry, user)
                    )
        finally:
            broker.stop()

        server = raft(vault_raft)
        try:
            world.interrupted("local", "vault", server.kill)
        finally:
            server.restart()
        assert world.migrate("local", "vault") == 0
        assert "2 moved, 1 already in vault" in capsys.readouterr().out
        assert world.keys_in("local") == []
        world.serves_everything_from("vault")

        try:
            world.interrupted("vault", "aws", lambda: pause(moto))
        finally:
            resume(moto)
        assert world.migrate("vault", "aws") == 0
        assert world.keys_in("vault") == []
        world.serves_everything_from("aws")

        assert world.migrate("aws", "local") == 0
        assert "3 moved, 0 already in local, 0 not moved" in capsys.readouterr().out
        assert world.keys_in("aws") == []
        world.serves_everything_from("local")
        for user in set(USERS.values()):
            assert find_in_tree(world.home.root, world.registry.users[user]) == []
