"""Registry use cases on the real SQLite store and local secret backend (fake minter only)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from pullbroker_client.secret import Secret
from pullbroker_service.app.lookup import new_registry_id
from pullbroker_service.domain.errors import (
    AlreadyExists,
    AmbiguousRegistry,
    BackendUnavailable,
    EtagMismatch,
    FailedPrecondition,
    InvalidArgument,
    InvalidRegistry,
    RegistryNotFound,
    SecretMissing,
)
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import (
    BasicCredential,
    RecordState,
    RegistryKind,
    RegistryRecord,
    SecretRef,
    credential_from_bytes,
)
from pullbroker_service.minting.base import ProbeResult
from pullbroker_service.secrets.kek import FileKeyWrapper
from pullbroker_service.secrets.local import LocalSecretBackend
from pullbroker_service.store.base import HostCheck
from pullbroker_service.store.sqlite import SqliteMetadataStore

from tests.unit.service.conftest import ADMIN, Core, build_core

CALLER = Identity(ADMIN, frozenset({"admin"}))
CRED = BasicCredential("robot", Secret("pw-1"))


def generic(name: str = "acme", url: str = "https://reg.example") -> RegistrySpec:
    return RegistrySpec(name, RegistryKind.GENERIC, url)


async def nothing_left(core: Core) -> None:
    """No record (ready or pending) and no secret of any record remain."""
    assert await core.store.list_page(100, None) == []
    assert await core.store.list_pending() == []
    assert await core.secrets.list_keys() == []


class FailingWrapper:
    """A KEK service that is down (as a KMS outage would be)."""

    name = "kms:down"

    async def new_data_key(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        raise BackendUnavailable("kms is down")

    async def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        raise BackendUnavailable("kms is down")


class LostReplyBackend(LocalSecretBackend):
    """Stores the secret, then fails as if the reply had been lost on the way back."""

    async def put(self, key: str, value: bytes) -> SecretRef:
        await super().put(key, value)
        raise BackendUnavailable("connection reset after write")


class FailingReplaceStore(SqliteMetadataStore):
    """Accepts creates, then fails every replace (the store went read-only)."""

    async def replace(
        self, record: RegistryRecord, expected_etag: str, check: HostCheck | None = None
    ) -> None:
        raise BackendUnavailable("metadata store is read-only")


@pytest.fixture
async def custom(tmp_path: Path) -> AsyncIterator[list[Core]]:
    built: list[Core] = []
    yield built
    for core in built:
        await core.store.close()
        await core.secrets.close()


class TestCreate:
    """Create validates, stores the secret before the record is usable, and never half-finishes."""

    async def test_create_generic(self, core: Core) -> None:
        """The record is READY with a reference whose secret decrypts to the credential."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        assert record.state is RecordState.READY
        assert (record.host, record.username, record.creator) == ("reg.example", "robot", ADMIN)
        assert record.credential_version == 1
        assert record.secret_ref is not None
        assert record.secret_ref.key == record.id
        assert credential_from_bytes(await core.secrets.get(record.secret_ref)) == CRED
        assert await core.registries.get(record.resource_name) == record
        assert core.minter.probes == [], "no test unless asked"

    async def test_create_public_has_no_secret(self, core: Core) -> None:
        """A public registry stores no secret and defaults to Docker Hub."""
        spec = RegistrySpec("hub", RegistryKind.PUBLIC, "")
        record = await core.registries.create(CALLER, spec, None, test=False)
        assert (record.secret_ref, record.credential_version) == (None, 0)
        assert record.url == "https://registry-1.docker.io"
        assert await core.secrets.list_keys() == []

    async def test_failed_test_writes_nothing(self, core: Core) -> None:
        """test=True with a failing probe refuses with the probe's message and writes nothing."""
        core.minter.probe_result = ProbeResult(
            "credential_rejected", "registry reg.example rejected the credential", 0.1, "bearer"
        )
        with pytest.raises(FailedPrecondition, match="rejected the credential"):
            await core.registries.create(CALLER, generic(), CRED, test=True)
        probed, credential, _ = core.minter.probes[0]
        assert (probed.id, probed.host, credential) == ("", "reg.example", CRED)
        await nothing_left(core)

    async def test_passing_test_then_create(self, core: Core) -> None:
        """test=True with a passing probe creates the record."""
        record = await core.registries.create(CALLER, generic(), CRED, test=True)
        assert len(core.minter.probes) == 1
        assert (await core.registries.get("acme")).id == record.id

    @pytest.mark.parametrize(
        ("spec", "credential", "fragment"),
        [
            (generic(url="http://reg.example"), CRED, "use https"),
            (generic(name="Bad Name"), CRED, "display_name"),
            (generic(), None, "credential is required"),
            (
                RegistrySpec(
                    "e", RegistryKind.ECR, "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
                ),
                None,
                "credential is required",
            ),
        ],
    )
    async def test_invalid_input_writes_nothing(
        self, core: Core, spec: RegistrySpec, credential: BasicCredential | None, fragment: str
    ) -> None:
        """Validation errors name the problem and leave no trace."""
        with pytest.raises(InvalidRegistry, match=fragment):
            await core.registries.create(CALLER, spec, credential, test=False)
        await nothing_left(core)

    async def test_kind_without_minter_is_refused(self, core: Core) -> None:
        """A valid record of a kind this broker cannot mint for yet is refused up front."""
        spec = RegistrySpec("g", RegistryKind.GHCR, "")
        with pytest.raises(InvalidRegistry, match="not supported by this broker yet"):
            await core.registries.create(CALLER, spec, CRED, test=False)
        await nothing_left(core)

    async def test_duplicate_name_stores_no_second_secret(self, core: Core) -> None:
        """AlreadyExists comes before any secret is written for the duplicate."""
        first = await core.registries.create(CALLER, generic(), CRED, test=False)
        with pytest.raises(AlreadyExists, match="'acme'"):
            await core.registries.create(CALLER, generic(), CRED, test=False)
        assert await core.secrets.list_keys() == [first.id]

    async def test_failing_put_leaves_nothing(self, tmp_path: Path, custom: list[Core]) -> None:
        """A secret backend failing on put leaves neither record nor secret."""
        secrets = LocalSecretBackend(tmp_path / "s.db", FailingWrapper())
        core = build_core(tmp_path, secrets=secrets)
        custom.append(core)
        with pytest.raises(BackendUnavailable, match="kms is down"):
            await core.registries.create(CALLER, generic(), CRED, test=False)
        await nothing_left(core)

    async def test_lost_put_reply_leaves_nothing(self, tmp_path: Path, custom: list[Core]) -> None:
        """A put that wrote but failed to answer is cleaned up: no orphan secret, no record."""
        secrets = LostReplyBackend(tmp_path / "s.db", FileKeyWrapper.open(tmp_path / "kek"))
        core = build_core(tmp_path, secrets=secrets)
        custom.append(core)
        with pytest.raises(BackendUnavailable):
            await core.registries.create(CALLER, generic(), CRED, test=False)
        await nothing_left(core)

    async def test_failing_ready_switch_leaves_nothing(
        self, tmp_path: Path, custom: list[Core]
    ) -> None:
        """If the record cannot be switched to READY, the stored secret and record are removed."""
        core = build_core(tmp_path, store=FailingReplaceStore(tmp_path / "m.db"))
        custom.append(core)
        with pytest.raises(BackendUnavailable, match="read-only"):
            await core.registries.create(CALLER, generic(), CRED, test=False)
        await nothing_left(core)


class GatedBackend(LocalSecretBackend):
    """Holds the first put until `release` is set; `entered` says it is being held."""

    def __init__(self, path: Path, wrapper: FileKeyWrapper) -> None:
        super().__init__(path, wrapper)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def put(self, key: str, value: bytes) -> SecretRef:
        if not self.entered.is_set():
            self.entered.set()
            await self.release.wait()
        return await super().put(key, value)


class TestCreateRaces:
    """Records that would tie on one host, created at once: one is stored, with its secret."""

    async def test_tie_with_a_create_in_flight(self, tmp_path: Path, custom: list[Core]) -> None:
        """While a create's record is PENDING (its secret on the way), a tying create is
        refused with AmbiguousRegistry naming it as still being created (its globs cannot be
        changed yet: retry), and stores no secret."""
        secrets = GatedBackend(tmp_path / "s.db", FileKeyWrapper.open(tmp_path / "kek"))
        core = build_core(tmp_path, secrets=secrets)
        custom.append(core)
        first = asyncio.create_task(
            core.registries.create(CALLER, generic("first"), CRED, test=False)
        )
        await asyncio.wait_for(secrets.entered.wait(), 10)
        with pytest.raises(AmbiguousRegistry, match=r"'first', which is still being created"):
            await core.registries.create(CALLER, generic("second"), CRED, test=False)
        secrets.release.set()
        made = await asyncio.wait_for(first, 10)
        assert [r.id for r in await core.store.list_page(10, None)] == [made.id]
        assert await core.secrets.list_keys() == [made.id]

    async def test_concurrent_tying_creates_one_wins(self, core: Core) -> None:
        """Eight concurrent creates of glob-less records on one host: one record and one
        secret; the other seven get AmbiguousRegistry."""
        outcomes = await asyncio.gather(
            *(core.registries.create(CALLER, generic(f"r{i}"), CRED, test=False) for i in range(8)),
            return_exceptions=True,
        )
        made = [o for o in outcomes if isinstance(o, RegistryRecord)]
        assert len(made) == 1, outcomes
        assert all(isinstance(o, AmbiguousRegistry) for o in outcomes if o not in made)
        assert [r.id for r in await core.store.list_page(10, None)] == [made[0].id]
        assert await core.secrets.list_keys() == [made[0].id]


class TestReadAndList:
    """Lookup by resource name or display name; opaque, bounded pagination."""

    async def test_get_by_either_name(self, core: Core) -> None:
        """registries/<id> and the display name find the same record; unknown is NotFound."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        assert await core.registries.get(f"registries/{record.id}") == record
        assert await core.registries.get("acme") == record
        with pytest.raises(RegistryNotFound):
            await core.registries.get("registries/nope")

    async def test_paging(self, core: Core) -> None:
        """Pages of two walk all five records in creation order, then the token is empty."""
        made = [
            await core.registries.create(
                CALLER, generic(f"r{i}", f"https://r{i}.example"), CRED, False
            )
            for i in range(5)
        ]
        seen: list[str] = []
        token = ""
        for _ in range(3):
            page, token = await core.registries.list(2, token)
            seen += [r.id for r in page]
        assert seen == [r.id for r in made]
        assert token == ""
        page, token = await core.registries.list(0, "")
        assert (len(page), token) == (5, "")

    @pytest.mark.parametrize(("size", "token"), [(-1, ""), (10, "%%%not-base64")])
    async def test_bad_paging_input(self, core: Core, size: int, token: str) -> None:
        """A negative page size or a foreign page token is InvalidArgument."""
        with pytest.raises(InvalidArgument):
            await core.registries.list(size, token)


class TestUpdate:
    """Updates need the current etag; rotation switches versions and keeps the old one."""

    async def test_rename(self, core: Core) -> None:
        """A rename changes the name and etag; the old name no longer resolves."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        renamed = await core.registries.update(
            CALLER, "acme", record.etag, display_name="acme-2", registry_ca_pem=None,
            allow_basic_passthrough=None, credential=None,
        )  # fmt: skip
        assert renamed.display_name == "acme-2"
        assert renamed.etag != record.etag
        assert renamed.secret_ref == record.secret_ref
        with pytest.raises(RegistryNotFound):
            await core.registries.get("acme")

    async def test_stale_or_missing_etag(self, core: Core) -> None:
        """A stale etag is EtagMismatch and an empty one InvalidArgument; nothing changes."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        with pytest.raises(EtagMismatch):
            await core.registries.update(
                CALLER, "acme", "stale", display_name="x", registry_ca_pem=None,
                allow_basic_passthrough=None, credential=None,
            )  # fmt: skip
        with pytest.raises(InvalidArgument, match="etag is required"):
            await core.registries.update(
                CALLER, "acme", "", display_name="x", registry_ca_pem=None,
                allow_basic_passthrough=None, credential=None,
            )  # fmt: skip
        assert await core.registries.get("acme") == record

    async def test_invalid_ca_is_refused(self, core: Core) -> None:
        """An unparsable CA bundle is refused on update as on create."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        with pytest.raises(InvalidRegistry, match="registry_ca_pem"):
            await core.registries.update(
                CALLER, "acme", record.etag, display_name=None, registry_ca_pem="junk",
                allow_basic_passthrough=None, credential=None,
            )  # fmt: skip

    async def test_rotation(self, core: Core) -> None:
        """A new version is stored and referenced, the old one kept as previous (for a
        rollback), the version bumped."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        new = BasicCredential("robot2", Secret("pw-2"))
        rotated = await core.registries.update(
            CALLER, record.resource_name, record.etag, display_name=None, registry_ca_pem=None,
            allow_basic_passthrough=None, credential=new,
        )  # fmt: skip
        assert (rotated.credential_version, rotated.username) == (2, "robot2")
        assert rotated.secret_ref is not None
        assert rotated.secret_ref.version == "2"
        assert credential_from_bytes(await core.secrets.get(rotated.secret_ref)) == new
        assert record.secret_ref is not None
        assert rotated.previous_secret_ref == record.secret_ref
        assert credential_from_bytes(await core.secrets.get(record.secret_ref)) == CRED

    async def test_failed_rotation_keeps_the_old_credential(
        self, tmp_path: Path, custom: list[Core]
    ) -> None:
        """If the switch fails, the new version is removed and the old one stays in force."""
        good = build_core(tmp_path)
        record = await good.registries.create(CALLER, generic(), CRED, test=False)
        await good.store.close()
        core = build_core(
            tmp_path, store=FailingReplaceStore(tmp_path / "metadata.db"), secrets=good.secrets
        )
        custom.append(core)
        with pytest.raises(BackendUnavailable):
            await core.registries.update(
                CALLER, "acme", record.etag, display_name=None, registry_ca_pem=None,
                allow_basic_passthrough=None, credential=BasicCredential("x", Secret("new")),
            )  # fmt: skip
        assert record.secret_ref is not None
        assert credential_from_bytes(await core.secrets.get(record.secret_ref)) == CRED
        with pytest.raises(SecretMissing):
            await core.secrets.get(SecretRef("local", record.id, "2"))
        assert await core.registries.get("acme") == record


class TestDelete:
    """Delete removes record and secret; a second delete is NotFound."""

    async def test_delete(self, core: Core) -> None:
        """After delete the record and every secret version are gone."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        await core.registries.delete(CALLER, "acme", record.etag)
        await nothing_left(core)
        with pytest.raises(RegistryNotFound):
            await core.registries.delete(CALLER, "acme", None)

    async def test_delete_with_stale_etag(self, core: Core) -> None:
        """A stale etag refuses the delete and keeps both record and secret."""
        record = await core.registries.create(CALLER, generic(), CRED, test=False)
        with pytest.raises(EtagMismatch):
            await core.registries.delete(CALLER, "acme", "stale")
        assert await core.registries.get("acme") == record
        assert await core.secrets.list_keys() == [record.id]


class TestConnectionTest:
    """test() probes saved registries with their stored credential, or unsaved ones as given."""

    async def test_saved(self, core: Core) -> None:
        """A saved registry is probed with the credential read back from the secret store."""
        await core.registries.create(CALLER, generic(), CRED, test=False)
        result = await core.registries.test("acme", None, None, "team/app")
        assert result.outcome == "ok"
        record, credential, repository = core.minter.probes[-1]
        assert (record.display_name, credential, repository) == ("acme", CRED, "team/app")

    async def test_saved_with_candidate_credential(self, core: Core) -> None:
        """A credential passed with a saved name is tested instead of the stored one."""
        await core.registries.create(CALLER, generic(), CRED, test=False)
        candidate = BasicCredential("robot", Secret("next"))
        await core.registries.test("acme", None, candidate, "")
        assert core.minter.probes[-1][1] == candidate

    async def test_unsaved(self, core: Core) -> None:
        """An unsaved spec is validated and probed, and nothing is stored."""
        await core.registries.test(None, generic(), CRED, "")
        assert core.minter.probes[-1][0].host == "reg.example"
        await nothing_left(core)
        with pytest.raises(InvalidRegistry):
            await core.registries.test(None, generic(url="http://x"), CRED, "")

    @pytest.mark.parametrize("both", [True, False])
    async def test_exactly_one_target(self, core: Core, both: bool) -> None:
        """Naming both a saved registry and a spec, or neither, is InvalidArgument."""
        with pytest.raises(InvalidArgument):
            await core.registries.test(
                "acme" if both else None, generic() if both else None, CRED, ""
            )


class TestRegistryIds:
    """Ids sort in creation order, even for records made in the same millisecond."""

    def test_ids_made_back_to_back_sort_in_creation_order(self) -> None:
        """Thousands of ids in a few milliseconds: unique, and sorted as made."""
        ids = [new_registry_id() for _ in range(5000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)
