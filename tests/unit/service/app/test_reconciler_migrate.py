"""Migration between two real local stores (the second under another backend name), and the
start-up guards that keep a broker and a migration apart."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import pytest
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_service.app.lookup import load_credential
from pullbroker_service.app.migrate import Migration
from pullbroker_service.bootstrap.broker_home import HomeLock, migration_marker
from pullbroker_service.bootstrap.migration import check_secret_references, run_migration
from pullbroker_service.config.broker import ConfigError, load_config
from pullbroker_service.domain.errors import BackendMismatch, BackendUnavailable, HomeInUse
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import BasicCredential, RegistryKind, SecretRef
from pullbroker_service.secrets.factory import VersionedBackend
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.unit.service.conftest import ADMIN, Core, build_core

CALLER = Identity(ADMIN, frozenset({"admin"}))


class SecondStore(LocalSecretBackend):
    """Another backend (its own file and KEK), so records can move between two."""

    name = "second"


class Delegating:
    def __init__(self, inner: VersionedBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


class DiesAfterPuts(Delegating):
    """The target goes down right after storing its `budget`-th copy (the reply is lost)."""

    def __init__(self, inner: VersionedBackend, budget: int) -> None:
        super().__init__(inner)
        self.budget = budget

    async def put(self, key: str, value: bytes) -> SecretRef:
        ref: SecretRef = await self.inner.put(key, value)
        self.budget -= 1
        if self.budget <= 0:
            raise BackendUnavailable("connection reset after the write")
        return ref


class CorruptReadBack(Delegating):
    async def get(self, ref: SecretRef) -> bytes:
        return b"not what was written"


@dataclass
class Two:
    core: Core
    second: SecondStore

    async def add(self, *names: str) -> list[str]:
        ids = []
        for name in names:
            spec = RegistrySpec(name, RegistryKind.GENERIC, f"https://{name}.example")
            cred = BasicCredential("robot", Secret(f"pw-of-{name}"))
            ids.append((await self.core.registries.create(CALLER, spec, cred, False)).id)
        return ids

    def migration(self, target: Any) -> Migration:
        sources = {"local": self.core.secrets, "second": self.second}
        return Migration(self.core.store, cast(Any, sources), cast(VersionedBackend, target))

    async def where(self) -> dict[str, str]:
        """display name -> backend of its reference, checking each credential still loads."""
        found = {}
        backends = {"local": self.core.secrets, "second": self.second}
        for record in await self.core.store.list_page(100, None):
            assert record.secret_ref is not None
            credential = await load_credential(backends[record.secret_ref.backend], record)
            assert isinstance(credential, BasicCredential)
            assert credential.password.reveal() == f"pw-of-{record.display_name}"
            found[record.display_name] = record.secret_ref.backend
        return found


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Two]:
    second = SecondStore(tmp_path / "second.db", FileKeyWrapper.open(tmp_path / "second.key"))
    world = Two(build_core(tmp_path), second)
    try:
        yield world
    finally:
        await world.core.store.close()
        await world.core.secrets.close()
        await second.close()


class TestMigration:
    """Every credential moves, verified, and a re-run resumes and finishes cleanly."""

    async def test_moves_everything_and_cleans_the_source(self, two: Two) -> None:
        """Each record switches to the target; the source holds nothing afterwards."""
        await two.add("a", "b", "c")
        report = await two.migration(two.second).run()
        assert (len(report.moved), report.failed) == (3, {})
        assert await two.where() == {"a": "second", "b": "second", "c": "second"}
        assert await two.core.secrets.list_keys() == []
        again = await two.migration(two.second).run()
        assert (again.moved, len(again.already), again.cleaned) == ([], 3, 0)

    async def test_interrupted_then_resumed(self, two: Two) -> None:
        """The target dies after storing the second copy: the run stops with the record on
        its old, working secret; the re-run finishes, replacing and deleting the half-copy."""
        ids = await two.add("a", "b", "c")
        with pytest.raises(BackendUnavailable):
            await two.migration(DiesAfterPuts(two.second, budget=2)).run()
        assert await two.where() == {"a": "second", "b": "local", "c": "local"}
        assert sorted(await two.second.list_keys()) == sorted(ids[:2]), "a half-copy of b"
        report = await two.migration(two.second).run()
        assert sorted(report.moved) == sorted(ids[1:])
        assert await two.where() == {"a": "second", "b": "second", "c": "second"}
        for record in await two.core.store.list_page(100, None):
            versions = [ref for ref, _ in await two.second.list_versions(record.id)]
            assert versions == [record.secret_ref], "only the referenced copy is left"
        assert await two.core.secrets.list_keys() == []

    async def test_copy_that_reads_back_wrong_is_not_used(self, two: Two) -> None:
        """A copy that differs from the original is deleted; the record stays and works."""
        (registry_id,) = await two.add("a")
        report = await two.migration(CorruptReadBack(two.second)).run()
        assert list(report.failed) == [registry_id]
        assert "differs from the original" in report.failed[registry_id]
        assert await two.where() == {"a": "local"}
        assert await two.second.list_versions(registry_id) == []

    async def test_back_and_forth(self, two: Two) -> None:
        """Migrating there and back leaves every credential where it started, readable."""
        await two.add("a", "b")
        await two.migration(two.second).run()
        await two.migration(two.core.secrets).run()
        assert await two.where() == {"a": "local", "b": "local"}
        assert await two.second.list_keys() == []


class TestGuards:
    """A broker and a migration never run on one home at once."""

    async def test_lock_excludes_migration_while_a_broker_runs(self, tmp_path: Path) -> None:
        """Brokers share the lock; a migration needs it alone, and vice versa."""
        home = Home(tmp_path)
        first = HomeLock.acquire(home, exclusive=False)
        second = HomeLock.acquire(home, exclusive=False)
        with pytest.raises(HomeInUse, match="a broker is running"):
            HomeLock.acquire(home, exclusive=True)
        await first.release()
        await second.release()
        migrating = HomeLock.acquire(home, exclusive=True)
        with pytest.raises(HomeInUse, match="secrets migrate` is running"):
            HomeLock.acquire(home, exclusive=False)
        await migrating.release()

    async def test_unfinished_migration_blocks_start(self, two: Two, tmp_path: Path) -> None:
        """The marker of an interrupted migration keeps a broker from serving."""
        home = Home(tmp_path)
        home.secrets_dir.mkdir(exist_ok=True)
        migration_marker(home).write_text("{}")
        with pytest.raises(BackendMismatch, match="did not finish"):
            await check_secret_references(home, two.core.store, "local")

    async def test_records_on_an_unconfigured_backend(self, tmp_path: Path) -> None:
        """A record in a backend the config does not describe: a ConfigError naming the
        section to add, before anything is locked or marked."""
        home = Home(tmp_path / "home")
        store = SqliteMetadataStore(home.metadata_db)
        world = build_core(tmp_path, store=store)
        record = await Two(world, cast(SecondStore, None)).add("a")
        moved = await store.get(record[0])
        await store.replace(
            replace(moved, secret_ref=SecretRef("vault", "p/a", "1"), etag="e2"), moved.etag
        )
        await store.close()
        await world.secrets.close()
        with pytest.raises(ConfigError, match="needs a `vault` section"):
            await run_migration(load_config(home=home), "local", print)
        assert not migration_marker(home).exists()
        await HomeLock.acquire(home, exclusive=True).release()  # the run released it

    async def test_every_credential_elsewhere_blocks_start(self, two: Two, tmp_path: Path) -> None:
        """All credentials in another backend than configured: the config was not switched."""
        await two.add("a")
        await check_secret_references(Home(tmp_path), two.core.store, "local")
        await two.migration(two.second).run()
        with pytest.raises(BackendMismatch, match="set secret_backend to where they are"):
            await check_secret_references(Home(tmp_path), two.core.store, "local")
        await check_secret_references(Home(tmp_path), two.core.store, "second")
