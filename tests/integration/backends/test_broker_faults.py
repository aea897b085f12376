"""Fault tests: the backend process stops in the middle of create, rotate and delete.

The registry use cases run on the real adapters the broker builds from its config file
(OpenBao raft+TLS, which keeps its data across a kill; moto over TLS, stopped with SIGSTOP so
it keeps its state). A wrapper at the port boundary stops the server process at the chosen
moment: right after a secret was stored (its reply "lost"), or before a call. Some cases also
crash the broker there. After the server is back and the reconciler has run: no orphaned
secret, no dangling reference, and every registry left is usable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from pullbroker_client.home import Home
from pullbroker_client.secret import Secret
from pullbroker_service.app.lookup import load_credential
from pullbroker_service.app.policy_source import StaticPolicy
from pullbroker_service.app.reconciler import Reconciler, ReconcileReport
from pullbroker_service.app.registries import Registries
from pullbroker_service.app.tokens import TokenIssuer
from pullbroker_service.config.broker import load_config
from pullbroker_service.domain.errors import BackendUnavailable, RegistryNotFound
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    BasicCredential,
    RecordState,
    RegistryKind,
    RegistryRecord,
    SecretRef,
)
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.factory import GuardedBackend, build_secret_backend
from pullbroker_service.store.base import HostCheck
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.harness.moto_server import MotoServer
from tests.integration.backends.conftest import VaultWorld
from tests.integration.backends.test_broker_backends import (
    pause,
    raft,
    resume,
    until_available,
    write_config,
)
from tests.unit.service.conftest import ADMIN, NODE, POLICY, FakeMinter

pytestmark = pytest.mark.integration

CALLER = Identity(ADMIN, frozenset({"admin"}))
NODE_CALLER = Identity(NODE, frozenset({"node"}))
OLD = BasicCredential("robot", Secret("old-password-value"))
NEW = BasicCredential("robot", Secret("new-password-value"))


class Crash(BaseException):
    """The broker process died here: no rollback, no further call of any kind."""


@dataclass
class Faults:
    """What the port-boundary wrapper does next."""

    stop_after_put: bool = False
    stop_before_delete: bool = False
    crash: bool = False
    dead: bool = False

    def check(self) -> None:
        if self.dead:
            raise Crash


class FaultyBackend:
    """The broker's backend, with the server stopped at the moment `faults` names."""

    def __init__(self, inner: GuardedBackend, faults: Faults, stop: Callable[[], None]) -> None:
        self.inner = inner
        self.name = inner.name
        self.faults = faults
        self._stop = stop

    def __getattr__(self, attr: str) -> Any:
        self.faults.check()
        return getattr(self.inner, attr)

    async def put(self, key: str, value: bytes) -> SecretRef:
        self.faults.check()
        ref = await self.inner.put(key, value)
        if self.faults.stop_after_put:
            self.faults.stop_after_put = False
            self._stop()
            if self.faults.crash:
                self.faults.dead = True
                raise Crash
            raise BackendUnavailable("the connection dropped before the reply arrived")
        return ref

    async def delete(self, key: str) -> None:
        self.faults.check()
        if self.faults.stop_before_delete:
            self._stop()
        await self.inner.delete(key)


class CrashingStore(SqliteMetadataStore):
    """The metadata store of a broker that may die (then nothing more is written)."""

    def __init__(self, path: Path, faults: Faults) -> None:
        super().__init__(path)
        self.faults = faults

    async def replace(
        self, record: RegistryRecord, expected_etag: str, check: HostCheck | None = None
    ) -> None:
        self.faults.check()
        await super().replace(record, expected_etag, check)

    async def delete(self, registry_id: str, expected_etag: str | None) -> None:
        self.faults.check()
        await super().delete(registry_id, expected_etag)


@dataclass
class Stage:
    """A broker core on one real backend, a way to stop and start that backend's process."""

    store: CrashingStore
    secrets: GuardedBackend
    faults: Faults
    registries: Registries
    issuer: TokenIssuer
    minter: FakeMinter
    start_server: Callable[[], None]
    stopped: list[bool] = field(default_factory=list)

    async def back_up(self) -> None:
        """The server runs again and the broker 'restarted' (nothing is dying any more)."""
        if self.stopped:
            self.start_server()
            self.stopped.clear()
        self.faults.dead = False
        await until_available(self.secrets)

    async def reconcile(self) -> ReconcileReport:
        return await Reconciler(self.store, self.secrets, grace_seconds=0).run_once()

    async def create(self, name: str = "acme") -> RegistryRecord:
        spec = RegistrySpec(name, RegistryKind.GENERIC, f"https://{name}.example")
        return await self.registries.create(CALLER, spec, OLD, test=False)

    async def assert_consistent(self) -> list[RegistryRecord]:
        """No pending record, no secret without a record, every record's version readable
        (and the only one), every registry mints."""
        records = await self.store.list_page(100, None)
        assert await self.store.list_pending() == []
        assert sorted(await self.secrets.list_keys()) == sorted(r.id for r in records)
        for record in records:
            assert record.state is RecordState.READY
            versions = [ref for ref, _ in await self.secrets.list_versions(record.id)]
            assert versions == [record.secret_ref]
            assert await load_credential(self.secrets, record) is not None
            await self.issuer.issue(
                NODE_CALLER, f"{record.host}/team/app", record.resource_name, True
            )
        return records


@pytest.fixture(params=["vault", "aws"])
async def stage(
    request: pytest.FixtureRequest, prefix: str, tmp_path: Path
) -> AsyncIterator[Stage]:
    """The broker core on vault (raft, killed and restarted) or aws (moto, paused/resumed)."""
    stop_server: Callable[[], None]
    start_server: Callable[[], None]
    if request.param == "vault":
        world: VaultWorld = request.getfixturevalue("vault_raft")
        path = write_config(tmp_path / "etc", "vault", prefix=prefix, vault=world)
        stop_server, start_server = raft(world).kill, raft(world).restart
    else:
        moto: MotoServer = request.getfixturevalue("moto")
        path = write_config(tmp_path / "etc", "aws", prefix=prefix, moto=moto)
        stop_server, start_server = partial(pause, moto), partial(resume, moto)
    config = load_config(home=Home(tmp_path / "home"), config_file=path)
    secrets = build_secret_backend(config.secrets, config.home)
    faults = Faults()
    store = CrashingStore(tmp_path / "metadata.db", faults)
    minter = FakeMinter()
    minters = MintersByKind.with_bearer(minter)
    cache = TokenCache()
    stopped: list[bool] = []

    def stop() -> None:
        stopped.append(True)
        stop_server()

    faulty = cast(GuardedBackend, FaultyBackend(secrets, faults, stop))
    built = Stage(
        store,
        secrets,
        faults,
        Registries(store, faulty, minters, cache),
        TokenIssuer(store, faulty, minters, cache, StaticPolicy(POLICY)),
        minter,
        start_server,
        stopped,
    )
    try:
        yield built
    finally:
        if built.stopped:
            start_server()
        await store.close()
        await secrets.close()


class TestCreate:
    """The backend stops in the middle of a create."""

    async def test_reply_lost_after_put(self, stage: Stage) -> None:
        """The secret was stored, then the backend stopped: the create fails UNAVAILABLE and
        its rollback cannot reach the backend; once it is back, nothing is left over."""
        stage.faults.stop_after_put = True
        with pytest.raises(BackendUnavailable):
            await stage.create()
        await stage.back_up()
        await stage.reconcile()
        assert await stage.assert_consistent() == []
        await stage.create()
        assert len(await stage.assert_consistent()) == 1

    async def test_broker_crash_after_put(self, stage: Stage) -> None:
        """The backend stopped and the broker died between the secret and READY: a PENDING
        record and its secret remain; the reconciler rolls both back."""
        stage.faults.stop_after_put = stage.faults.crash = True
        with pytest.raises(Crash):
            await stage.create()
        await stage.back_up()
        (pending,) = await stage.store.list_pending()
        assert await stage.secrets.list_keys() == [pending.id]
        assert (await stage.reconcile()).rolled_back == [pending.id]
        assert await stage.assert_consistent() == []


class TestRotate:
    """The backend stops in the middle of a rotation."""

    async def test_reply_lost_after_put(self, stage: Stage) -> None:
        """The new version was stored, then the backend stopped: the record still uses the
        old version; afterwards the stray new version is removed and the old one works."""
        record = await stage.create()
        stage.faults.stop_after_put = True
        with pytest.raises(BackendUnavailable):
            await stage.registries.update(
                CALLER,
                record.resource_name,
                record.etag,
                display_name=None,
                registry_ca_pem=None,
                allow_basic_passthrough=None,
                credential=NEW,
            )
        await stage.back_up()
        assert await stage.store.get(record.id) == record
        assert await load_credential(stage.secrets, record) == OLD
        assert len(await stage.secrets.list_versions(record.id)) == 2, "the stray is there"
        assert len((await stage.reconcile()).strays) == 1
        (left,) = await stage.assert_consistent()
        assert left == record
        assert stage.minter.mints[-1].credential == OLD


class TestDelete:
    """The backend stops in the middle of a delete."""

    async def test_backend_stopped_before_secret_delete(self, stage: Stage) -> None:
        """The record goes, the secret delete cannot (logged, not an error); the secret is an
        orphan the reconciler removes; deleting again is NOT_FOUND."""
        record = await stage.create()
        stage.faults.stop_before_delete = True
        await stage.registries.delete(CALLER, record.resource_name, None)
        stage.faults.stop_before_delete = False
        await stage.back_up()
        await stage.reconcile()
        assert await stage.assert_consistent() == []
        with pytest.raises(RegistryNotFound):
            await stage.registries.delete(CALLER, record.resource_name, None)
