"""Rotation is tested before it takes effect, and the version it replaced stays for a rollback
(real SQLite store and local secret backend; the minter is the fake one)."""

from __future__ import annotations

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.reconciler import Reconciler
from pullbroker_service.domain.errors import (
    EtagMismatch,
    FailedPrecondition,
    SecretMissing,
)
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    BasicCredential,
    Credential,
    RegistryKind,
    RegistryRecord,
    credential_from_bytes,
)
from pullbroker_service.minting.base import ProbeResult

from tests.unit.service.conftest import ADMIN, NODE, Core

CALLER = Identity(ADMIN, frozenset({"admin"}))
NODE_CALLER = Identity(NODE, frozenset({"node"}))
OLD = BasicCredential("robot", Secret("pw-old"))
NEW = BasicCredential("robot2", Secret("pw-new"))
NEWER = BasicCredential("robot3", Secret("pw-newer"))
REJECTED = ProbeResult("credential_rejected", "registry reg.example rejected the credential", 0, "")
UNREACHABLE = ProbeResult("unreachable", "registry reg.example did not answer", 0, "")


async def created(core: Core) -> RegistryRecord:
    spec = RegistrySpec("acme", RegistryKind.GENERIC, "https://reg.example")
    return await core.registries.create(CALLER, spec, OLD, test=False)


async def rotate(
    core: Core, record: RegistryRecord, credential: Credential, *, test: bool = True
) -> RegistryRecord:
    return await core.registries.update(
        CALLER,
        record.resource_name,
        record.etag,
        display_name=None,
        registry_ca_pem=None,
        allow_basic_passthrough=None,
        credential=credential,
        test=test,
    )


async def stored(core: Core, record: RegistryRecord) -> Credential:
    assert record.secret_ref is not None
    return credential_from_bytes(await core.secrets.get(record.secret_ref))


class TestTestedRotation:
    """The registry is asked about the new credential before anything is written."""

    async def test_accepted_credential_is_probed_then_rotated(self, core: Core) -> None:
        """The probe sees the new credential and its username; then the rotation happens."""
        record = await created(core)
        rotated = await rotate(core, record, NEW)
        (probed, credential, repository) = core.minter.probes[-1]
        assert (probed.id, probed.username, credential, repository) == (
            record.id,
            "robot2",
            NEW,
            "",
        )
        assert rotated.credential_version == 2
        assert await stored(core, rotated) == NEW

    @pytest.mark.parametrize(
        ("probe", "advice"), [(REJECTED, False), (UNREACHABLE, True)], ids=["rejected", "down"]
    )
    async def test_refused_credential_changes_nothing(
        self, core: Core, probe: ProbeResult, advice: bool
    ) -> None:
        """A refusal is FailedPrecondition with the registry's reason; the record, the secret
        versions and cached tokens stay; only a registry that could not be asked suggests
        skipping the test."""
        record = await created(core)
        await core.issuer.issue(NODE_CALLER, "reg.example/team/app", None, False)
        mints = len(core.minter.mints)
        core.minter.probe_result = probe
        with pytest.raises(FailedPrecondition) as refused:
            await rotate(core, record, NEW)
        message = str(refused.value)
        assert probe.message in message
        assert "keeps its current one" in message
        assert ("skip_test" in message) is advice
        assert "\n" not in message
        assert "pw-new" not in message
        assert await core.store.get(record.id) == record
        assert [v for v, _ in await core.secrets.list_versions(record.id)] == [record.secret_ref]
        await core.issuer.issue(NODE_CALLER, "reg.example/team/app", None, False)
        assert len(core.minter.mints) == mints, "the cached token is still served"

    async def test_skip_test_rotates_without_asking(self, core: Core) -> None:
        """With test=False the probe is not run and a credential the registry would refuse
        is put in force."""
        record = await created(core)
        core.minter.probe_result = REJECTED
        probes = len(core.minter.probes)
        rotated = await rotate(core, record, NEW, test=False)
        assert len(core.minter.probes) == probes
        assert await stored(core, rotated) == NEW


class TestRollback:
    """The version the last rotation replaced can be made current again, once."""

    async def test_rollback_restores_the_previous_credential(self, core: Core) -> None:
        """The previous version becomes current (new version number, its username, cache
        dropped) and the rolled-back version is deleted."""
        record = await created(core)
        rotated = await rotate(core, record, NEW, test=False)
        await core.issuer.issue(NODE_CALLER, "reg.example/team/app", None, False)
        assert core.minter.mints[-1].credential == NEW
        rolled = await core.registries.rollback(CALLER, "acme", rotated.etag)
        assert (rolled.credential_version, rolled.username) == (3, "robot")
        assert rolled.secret_ref == record.secret_ref
        assert rolled.previous_secret_ref is None
        assert await stored(core, rolled) == OLD
        assert rotated.secret_ref is not None
        with pytest.raises(SecretMissing):
            await core.secrets.get(rotated.secret_ref)
        await core.issuer.issue(NODE_CALLER, "reg.example/team/app", None, False)
        assert core.minter.mints[-1].credential == OLD, "the token of the new one was dropped"

    async def test_nothing_to_roll_back(self, core: Core) -> None:
        """Never rotated, or rolled back already: FailedPrecondition, nothing changes."""
        record = await created(core)
        with pytest.raises(FailedPrecondition, match="no previous credential"):
            await core.registries.rollback(CALLER, "acme", record.etag)
        rotated = await rotate(core, record, NEW)
        rolled = await core.registries.rollback(CALLER, "acme", rotated.etag)
        with pytest.raises(FailedPrecondition, match="no previous credential"):
            await core.registries.rollback(CALLER, "acme", rolled.etag)
        assert await core.store.get(record.id) == rolled

    async def test_stale_etag(self, core: Core) -> None:
        """A rollback needs the etag as read."""
        record = await created(core)
        await rotate(core, record, NEW)
        with pytest.raises(EtagMismatch):
            await core.registries.rollback(CALLER, "acme", record.etag)

    async def test_one_step_back_is_kept(self, core: Core) -> None:
        """The next rotation retires the version the previous one kept: a rollback goes back
        one rotation, never two."""
        first = await created(core)
        second = await rotate(core, first, NEW)
        third = await rotate(core, second, NEWER)
        assert third.previous_secret_ref == second.secret_ref
        assert first.secret_ref is not None
        with pytest.raises(SecretMissing):
            await core.secrets.get(first.secret_ref)
        rolled = await core.registries.rollback(CALLER, "acme", third.etag)
        assert await stored(core, rolled) == NEW

    async def test_reconciler_keeps_the_previous_version(self, core: Core) -> None:
        """A full reconcile pass does not take the previous version for a stray."""
        record = await created(core)
        rotated = await rotate(core, record, NEW)
        report = await Reconciler(core.store, core.secrets, grace_seconds=0).run_once()
        assert report.strays == []
        versions = {ref for ref, _ in await core.secrets.list_versions(record.id)}
        assert versions == {rotated.secret_ref, record.secret_ref}

    async def test_rollback_is_audited(self, core: Core) -> None:
        """A rollback is an audit event of its own (credential.rollback)."""
        events: list[tuple[str, str]] = []

        class Sink:
            def event(self, action: object, outcome: object, *args: object, **kw: object) -> None:
                events.append((str(action), str(outcome)))

        core.registries._audit = Sink()  # type: ignore[assignment]
        record = await created(core)
        rotated = await rotate(core, record, NEW)
        rolled = await core.registries.rollback(CALLER, "acme", rotated.etag)
        with pytest.raises(FailedPrecondition):
            await core.registries.rollback(CALLER, "acme", rolled.etag)
        (done, refused) = events[-2:]
        assert done == ("credential.rollback", "allowed")
        assert refused[0] == "credential.rollback"
        assert refused[1] != "allowed"
