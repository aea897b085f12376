"""The reconciler on the real SQLite store and local secret backend: half-done creates,
orphans, interrupted rotations, and never a referenced version deleted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.lookup import load_credential, new_etag, utc_now
from pullbroker_service.app.reconciler import Reconciler
from pullbroker_service.domain.errors import BackendUnavailable, RegistryNotFound
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    BasicCredential,
    RecordState,
    RegistryKind,
    RegistryRecord,
    SecretRef,
    credential_to_bytes,
)
from pullbroker_service.secrets.factory import VersionedBackend
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.base import HostCheck, MetadataStore
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.unit.service.conftest import ADMIN, NODE, Core, build_core

CALLER = Identity(ADMIN, frozenset({"admin"}))
NODE_CALLER = Identity(NODE, frozenset({"node"}))
OLD = BasicCredential("robot", Secret("old-password"))
NEW = BasicCredential("robot", Secret("new-password"))


class Crash(BaseException):
    """The broker process died: nothing after this point runs, no rollback either."""


@dataclass
class Fate:
    """die_after_put: the process dies right after the next secret is stored; down: the
    backend refuses every call with BackendUnavailable."""

    die_after_put: bool = False
    dead: bool = False
    down: bool = False

    def check(self) -> None:
        if self.dead:
            raise Crash
        if self.down:
            raise BackendUnavailable("the backend is down")


class DyingSecrets(LocalSecretBackend):
    def __init__(self, path: Path, tmp: Path, fate: Fate) -> None:
        super().__init__(path, FileKeyWrapper.open(tmp / "kek.key"))
        self.fate = fate

    async def put(self, key: str, value: bytes) -> SecretRef:
        self.fate.check()
        ref = await super().put(key, value)
        self.fate.dead = self.fate.die_after_put
        return ref

    async def delete(self, key: str) -> None:
        self.fate.check()
        await super().delete(key)

    async def delete_version(self, ref: SecretRef) -> None:
        self.fate.check()
        await super().delete_version(ref)


class DyingStore(SqliteMetadataStore):
    def __init__(self, path: Path, fate: Fate) -> None:
        super().__init__(path)
        self.fate = fate

    async def replace(
        self, record: RegistryRecord, expected_etag: str, check: HostCheck | None = None
    ) -> None:
        if self.fate.dead:
            raise Crash
        await super().replace(record, expected_etag, check)


class Delegating:
    """The backend port passed through to `inner`, for a test to override one method."""

    def __init__(self, inner: VersionedBackend) -> None:
        self.inner = inner
        self.name = inner.name

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


@dataclass
class World:
    core: Core
    fate: Fate

    @property
    def secrets(self) -> LocalSecretBackend:
        return self.core.secrets

    def restart(self) -> None:
        """The broker starts again (same files): nothing is dying any more."""
        self.fate.dead = self.fate.die_after_put = self.fate.down = False

    def reconciler(self, *, grace: float = 120.0, at: datetime | None = None) -> Reconciler:
        when = at or utc_now() + timedelta(hours=1)
        return Reconciler(self.core.store, self.secrets, grace_seconds=grace, clock=lambda: when)

    async def ready(self, name: str = "acme") -> RegistryRecord:
        spec = RegistrySpec(name, RegistryKind.GENERIC, f"https://{name}.example")
        return await self.core.registries.create(CALLER, spec, OLD, test=False)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    fate = Fate()
    store = DyingStore(tmp_path / "metadata.db", fate)
    secrets = DyingSecrets(tmp_path / "secrets.db", tmp_path, fate)
    built = World(build_core(tmp_path, store=store, secrets=secrets), fate)
    try:
        yield built
    finally:
        built.restart()
        await store.close()
        await secrets.close()


class TestInterruptedCreate:
    """A create that died between the secret and READY is rolled back, after the grace."""

    async def test_crash_after_put_is_rolled_back(self, world: World) -> None:
        """Crash after the secret was stored: a PENDING record and its secret remain; the
        reconciler removes both, and the name can be used again."""
        world.fate.die_after_put = True
        with pytest.raises(Crash):
            await world.ready()
        world.restart()
        (pending,) = await world.core.store.list_pending()
        assert await world.secrets.list_keys() == [pending.id]
        report = await world.reconciler().run_once()
        assert report.rolled_back == [pending.id]
        assert await world.core.store.list_pending() == []
        assert await world.secrets.list_keys() == []
        assert (await world.ready()).state is RecordState.READY

    async def test_young_pending_is_left_alone(self, world: World) -> None:
        """A PENDING record younger than the grace period may be in flight: untouched."""
        world.fate.die_after_put = True
        with pytest.raises(Crash):
            await world.ready()
        world.restart()
        report = await world.reconciler(at=utc_now()).run_once()
        assert (report.waiting, report.rolled_back) == (1, [])
        assert len(await world.secrets.list_keys()) == 1

    async def test_pending_that_finished_meanwhile_is_kept(self, world: World) -> None:
        """The record is deleted by etag: a create that turned READY since is not rolled back."""
        record = await world.ready()
        stale = replace(record, state=RecordState.PENDING, etag="stale")
        store = world.core.store

        class Listing:
            async def list_pending(self) -> list[RegistryRecord]:
                return [stale]

            def __getattr__(self, attr: str) -> Any:
                return getattr(store, attr)

        done = Reconciler(cast(MetadataStore, Listing()), world.secrets, grace_seconds=0)
        assert (await done.run_once()).rolled_back == []
        assert await store.get(record.id) == record
        assert await load_credential(world.secrets, record) == OLD


class TestOrphans:
    """Secrets no record uses are removed; referenced ones never are."""

    async def test_orphan_removed_and_referenced_kept(self, world: World) -> None:
        """A key without a record goes; a READY record's secret stays readable."""
        record = await world.ready()
        await world.secrets.put("orphan", b"left by a crashed delete")
        report = await world.reconciler(at=utc_now()).run_once()
        assert report.orphans == ["orphan"]
        assert await world.secrets.list_keys() == [record.id]
        assert await load_credential(world.secrets, record) == OLD

    async def test_delete_with_backend_down_then_reconcile(self, world: World) -> None:
        """Delete succeeds while the backend is down (the secret delete is logged, not
        fatal); the secret is an orphan the next pass removes; deleting again is NOT_FOUND."""
        record = await world.ready()
        world.fate.down = True
        await world.core.registries.delete(CALLER, record.resource_name, None)
        with pytest.raises(RegistryNotFound):
            await world.core.store.get(record.id)
        world.restart()
        assert (await world.reconciler().run_once()).orphans == [record.id]
        assert await world.secrets.list_keys() == []

    async def test_key_of_record_on_another_backend(self, world: World) -> None:
        """A migration leftover (the record moved to another backend) is removed whole."""
        record = await world.ready()
        moved = replace(record, secret_ref=SecretRef("vault", "p/x", "1"), etag=new_etag())
        await world.core.store.replace(moved, record.etag)
        report = await world.reconciler().run_once(full=False)
        assert report.orphans == [record.id]
        assert await world.secrets.list_keys() == []


class TestInterruptedRotation:
    """A rotation that stored its version but never switched leaves the old one in use."""

    async def _interrupted(self, world: World) -> tuple[RegistryRecord, SecretRef]:
        record = await world.ready()
        world.fate.die_after_put = True
        with pytest.raises(Crash):
            await world.core.registries.update(
                CALLER,
                record.resource_name,
                record.etag,
                display_name=None,
                registry_ca_pem=None,
                allow_basic_passthrough=None,
                credential=NEW,
            )
        world.restart()
        stray = SecretRef("local", record.id, "2")
        assert await world.secrets.get(stray) == credential_to_bytes(NEW)
        return record, stray

    async def test_record_stays_on_old_version_and_stray_goes(self, world: World) -> None:
        """After the crash the record still reads the old credential; a full pass deletes
        the stray version, and the registry keeps working."""
        record, stray = await self._interrupted(world)
        assert await world.core.store.get(record.id) == record
        assert (await world.reconciler().run_once(full=False)).strays == []
        assert (await world.reconciler().run_once(full=True)).strays == [stray]
        assert [r for r, _ in await world.secrets.list_versions(record.id)] == [record.secret_ref]
        await world.core.issuer.issue(NODE_CALLER, "acme.example/team/app", None, True)
        assert world.core.minter.mints[-1].credential == OLD

    async def test_young_stray_is_kept(self, world: World) -> None:
        """A version younger than the grace period may be a rotation in flight."""
        _, stray = await self._interrupted(world)
        assert (await world.reconciler(at=utc_now()).run_once()).strays == []
        assert await world.secrets.get(stray)

    async def test_version_switched_to_meanwhile_is_kept(self, world: World) -> None:
        """If the record switches to the 'stray' between listing and deleting, it stays."""
        _, stray = await self._interrupted(world)
        store = world.core.store

        class Switching(Delegating):
            async def list_versions(self, key: str) -> list[tuple[SecretRef, datetime]]:
                found: list[tuple[SecretRef, datetime]] = await self.inner.list_versions(key)
                now = await store.get(key)
                await store.replace(replace(now, secret_ref=stray, etag=new_etag()), now.etag)
                return found

        switching = cast(VersionedBackend, Switching(world.secrets))
        report = await Reconciler(store, switching, grace_seconds=0).run_once()
        assert stray not in report.strays
        assert await world.secrets.get(stray) == credential_to_bytes(NEW)

    async def test_dangling_reference_is_reported_not_deleted(self, world: World) -> None:
        """A READY record whose version is gone is reported; the record is left for a person."""
        record = await world.ready()
        assert record.secret_ref is not None
        await world.secrets.delete_version(record.secret_ref)
        report = await world.reconciler().run_once()
        assert report.dangling == [record.id]
        assert await world.core.store.get(record.id) == record


class TestPeriodic:
    """The periodic loop survives an outage and cleans up when the backend is back."""

    async def test_outage_then_recovery(self, world: World) -> None:
        """Passes fail while the backend is down (logged), and the first one after it comes
        back removes the orphan."""
        await world.secrets.put("orphan", b"x")
        down = {"left": 2}

        class Flaky(Delegating):
            async def list_keys(self) -> list[str]:
                if down["left"]:
                    down["left"] -= 1
                    raise BackendUnavailable("down")
                keys: list[str] = await self.inner.list_keys()
                return keys

        flaky = cast(VersionedBackend, Flaky(world.secrets))
        loop = Reconciler(world.core.store, flaky, grace_seconds=0).run_periodically(0.01)
        task = asyncio.create_task(loop)
        try:
            for _ in range(500):
                if not await world.secrets.list_keys():
                    break
                await asyncio.sleep(0.01)
        finally:
            task.cancel()
        assert down["left"] == 0
        assert await world.secrets.list_keys() == []
