"""One behavioural suite for the metadata stores, the deployment store and the local secret
store's envelopes, run on SQLite and on a real PostgreSQL (the `stores` fixture)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from pullbroker_service.app.ambiguity import ambiguity_check
from pullbroker_service.domain.deployment import (
    DeploymentRecord,
    DeploymentState,
    FailureCategory,
    Target,
)
from pullbroker_service.domain.errors import (
    AlreadyExists,
    AmbiguousRegistry,
    DeploymentNotFound,
    EtagMismatch,
    RegistryNotFound,
    SecretMissing,
)
from pullbroker_service.domain.model import RecordState, RegistryRecord, SecretRef
from pullbroker_service.store.base import HostCheck

from tests.integration.store.conftest import NOW, Stores, registry

pytestmark = pytest.mark.integration


def deployment(did: str, registry_id: str = "r1", **changes: object) -> DeploymentRecord:
    base = DeploymentRecord(
        id=did,
        image="reg.example/team/app:1",
        registry_id=registry_id,
        inline_credential=False,
        target=Target.parse("kubernetes:prod/web"),
        state=DeploymentState.PENDING_DEPLOY,
        failure_category=FailureCategory.NONE,
        message="",
        digest="",
        creator="spiffe://pullbroker.local/admin",
        reported_by="",
        create_time=NOW,
        update_time=NOW,
        etag=f"etag-{did}",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class TestRegistries:
    """Registry records: round trips, unique names, etags, paging, host lookup."""

    async def test_round_trip(self, stores: Stores) -> None:
        """Every field, the JSON secret reference and timestamps included, comes back equal."""
        rec = registry("r1", "acme", allow_basic_passthrough=True, registry_ca_pem="PEM")
        await stores.metadata.create(rec)
        assert await stores.metadata.get("r1") == rec
        assert await stores.metadata.get_by_display_name("acme") == rec
        rotated = replace(rec, previous_secret_ref=rec.secret_ref, etag="e2")
        await stores.metadata.replace(rotated, rec.etag)
        assert await stores.metadata.get("r1") == rotated, "the rollback version is kept"

    async def test_missing(self, stores: Stores) -> None:
        """Unknown ids and names raise RegistryNotFound."""
        with pytest.raises(RegistryNotFound):
            await stores.metadata.get("nope")
        with pytest.raises(RegistryNotFound, match="'nope'"):
            await stores.metadata.get_by_display_name("nope")

    async def test_display_name_is_unique(self, stores: Stores) -> None:
        """A second record with the same display name is AlreadyExists and not written."""
        await stores.metadata.create(registry("r1", "acme"))
        with pytest.raises(AlreadyExists, match="'acme'"):
            await stores.metadata.create(registry("r2", "acme"))
        assert [r.id for r in await stores.metadata.list_page(10, None)] == ["r1"]

    async def test_replace_checks_etag(self, stores: Stores) -> None:
        """replace succeeds with the current etag and fails with a stale one, naming the
        current etag (both databases)."""
        rec = registry("r1", "acme")
        await stores.metadata.create(rec)
        await stores.metadata.replace(replace(rec, display_name="acme2", etag="e2"), rec.etag)
        with pytest.raises(EtagMismatch, match="read it again") as raised:
            await stores.metadata.replace(replace(rec, display_name="x", etag="e3"), rec.etag)
        assert raised.value.current_etag == "e2"
        assert (await stores.metadata.get("r1")).display_name == "acme2"

    async def test_rename_onto_taken_name(self, stores: Stores) -> None:
        """Renaming onto another record's name is AlreadyExists."""
        await stores.metadata.create(registry("r1", "acme"))
        rec2 = registry("r2", "beta")
        await stores.metadata.create(rec2)
        with pytest.raises(AlreadyExists):
            await stores.metadata.replace(replace(rec2, display_name="acme", etag="x"), rec2.etag)

    async def test_replace_missing(self, stores: Stores) -> None:
        """Replacing a record that does not exist is RegistryNotFound, not EtagMismatch."""
        with pytest.raises(RegistryNotFound):
            await stores.metadata.replace(registry("r9", "x", etag="new"), "old")

    async def test_delete(self, stores: Stores) -> None:
        """delete checks the etag when given; a second delete is RegistryNotFound."""
        rec = registry("r1", "acme")
        await stores.metadata.create(rec)
        with pytest.raises(EtagMismatch):
            await stores.metadata.delete("r1", "stale")
        await stores.metadata.delete("r1", rec.etag)
        with pytest.raises(RegistryNotFound):
            await stores.metadata.delete("r1", None)

    async def test_paging(self, stores: Stores) -> None:
        """Pages are ordered by id and continue strictly after after_id."""
        for i in (3, 1, 5, 2, 4):
            await stores.metadata.create(registry(f"r{i}", f"name{i}"))
        first = await stores.metadata.list_page(2, None)
        second = await stores.metadata.list_page(2, first[-1].id)
        last = await stores.metadata.list_page(2, second[-1].id)
        pages = [[r.id for r in p] for p in (first, second, last)]
        assert pages == [["r1", "r2"], ["r3", "r4"], ["r5"]]

    async def test_host_lookup_and_pending_journal(self, stores: Stores) -> None:
        """find_by_host returns READY records of that host; PENDING ones (the reconciler's
        journal of unfinished creates) are listed apart."""
        await stores.metadata.create(registry("r1", "a"))
        await stores.metadata.create(registry("r2", "b", state=RecordState.PENDING))
        await stores.metadata.create(registry("r3", "c", host="other.example"))
        assert [r.id for r in await stores.metadata.find_by_host("reg.example")] == ["r1"]
        assert [r.id for r in await stores.metadata.list_pending()] == ["r2"]
        assert await stores.metadata.find_by_host("none.example") == []


def unambiguous(record: RegistryRecord) -> HostCheck:
    """The check the broker hands the store with a create or a glob change."""
    return ambiguity_check(record.host, record.display_name, record.repositories, record.id)


class TestHostChecks:
    """A write's HostCheck and the write are one step: concurrent writers cannot both pass."""

    RACERS = 8

    async def test_racing_tying_creates_store_one(self, stores: Stores) -> None:
        """RACERS concurrent creates of glob-less records on one host: one is stored, every
        other gets AmbiguousRegistry; a record with globs on that host and one on another
        host, created in the same burst, are stored too."""
        tying = [registry(f"t{i}", f"tie-{i}") for i in range(self.RACERS)]
        bystanders = [
            registry("b1", "globbed", repositories=("other/*",)),
            registry("b2", "elsewhere", host="other.example"),
        ]
        outcomes = await asyncio.gather(
            *(stores.metadata.create(r, unambiguous(r)) for r in [*tying, *bystanders]),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(refused) == self.RACERS - 1, outcomes
        assert all(isinstance(o, AmbiguousRegistry) for o in refused), refused
        stored = {r.id for r in await stores.metadata.list_page(100, None)}
        assert len(stored & {r.id for r in tying}) == 1
        assert {"b1", "b2"} <= stored
        assert len(stored) == 3

    async def test_pending_record_holds_its_place(self, stores: Stores) -> None:
        """A create still PENDING (its secret on the way) is checked against like a READY
        record: a tying create is refused and not written."""
        await stores.metadata.create(registry("r1", "first", state=RecordState.PENDING))
        second = registry("r2", "second")
        with pytest.raises(AmbiguousRegistry, match="'first'"):
            await stores.metadata.create(second, unambiguous(second))
        assert [r.id for r in await stores.metadata.list_page(10, None)] == ["r1"]

    async def test_checked_replace_refused_leaves_the_record(self, stores: Stores) -> None:
        """A replace whose new globs tie with another record is refused; the stored record
        keeps its globs and etag."""
        await stores.metadata.create(registry("r1", "teams", repositories=("team/*",)))
        other = registry("r2", "others", repositories=("other/*",))
        await stores.metadata.create(other)
        moved = replace(other, repositories=("team/*",), etag="e2")
        with pytest.raises(AmbiguousRegistry, match="'teams'"):
            await stores.metadata.replace(moved, other.etag, unambiguous(moved))
        assert await stores.metadata.get("r2") == other


class TestDeployments:
    """Deployment records: ids reused only after termination, etags, filters."""

    async def test_round_trip_and_missing(self, stores: Stores) -> None:
        """A record comes back equal; an unknown id is DeploymentNotFound."""
        rec = deployment("d1", inline_credential=True)
        await stores.deployments.create(rec)
        assert await stores.deployments.get("d1") == rec
        with pytest.raises(DeploymentNotFound):
            await stores.deployments.get("nope")

    async def test_id_reused_only_after_termination(self, stores: Stores) -> None:
        """A live id is AlreadyExists; a terminated one is replaced by the new record."""
        rec = deployment("d1")
        await stores.deployments.create(rec)
        with pytest.raises(AlreadyExists):
            await stores.deployments.create(deployment("d1", image="other"))
        ended = replace(rec, state=DeploymentState.TERMINATED, etag="e2")
        await stores.deployments.replace(ended, rec.etag)
        again = deployment("d1", image="again", etag="e3")
        await stores.deployments.create(again)
        assert await stores.deployments.get("d1") == again

    async def test_replace_checks_etag(self, stores: Stores) -> None:
        """A stale etag is EtagMismatch naming the current one; a missing id is NotFound."""
        rec = deployment("d1")
        await stores.deployments.create(rec)
        await stores.deployments.replace(replace(rec, message="a", etag="e2"), rec.etag)
        with pytest.raises(EtagMismatch) as raised:
            await stores.deployments.replace(replace(rec, message="b", etag="e3"), rec.etag)
        assert raised.value.current_etag == "e2"
        with pytest.raises(DeploymentNotFound):
            await stores.deployments.replace(deployment("d9", etag="n"), "old")

    async def test_filters_and_references(self, stores: Stores) -> None:
        """Lists skip terminated records unless asked; referencing sees live ones only."""
        await stores.deployments.create(deployment("d1"))
        await stores.deployments.create(deployment("d2", registry_id="r2"))
        await stores.deployments.create(deployment("d3", state=DeploymentState.TERMINATED))
        live = await stores.deployments.list_page(10, None)
        every = await stores.deployments.list_page(10, None, include_terminated=True)
        of_r2 = await stores.deployments.list_page(10, None, registry_id="r2")
        assert [d.id for d in live] == ["d1", "d2"]
        assert [d.id for d in every] == ["d1", "d2", "d3"]
        assert [d.id for d in of_r2] == ["d2"]
        assert [d.id for d in await stores.deployments.referencing("r1")] == ["d1"]
        await stores.deployments.delete("d1")
        await stores.deployments.delete("d1")  # idempotent
        assert await stores.deployments.referencing("r1") == []


class TestEnvelopes:
    """The local secret store on either table: versions, deletion, listing."""

    async def test_versions_count_up_and_are_not_reused(self, stores: Stores) -> None:
        """Each put is a new version; a deleted newest version's number is not given again."""
        first = await stores.secrets.put("r1", b"one")
        second = await stores.secrets.put("r1", b"two")
        assert (first.version, second.version) == ("1", "2")
        assert await stores.secrets.get(first) == b"one"
        await stores.secrets.delete_version(second)
        assert (await stores.secrets.put("r1", b"three")).version == "3"
        listed = await stores.secrets.list_versions("r1")
        assert [ref.version for ref, _ in listed] == ["1", "3"]

    async def test_insert_a_given_version(self, stores: Stores) -> None:
        """insert_version copies an envelope in as it is (idempotent); the key's counter
        rises past it, so the next put does not reuse the number; the copy decrypts."""
        original = await stores.secrets.put("r1", b"one")
        envelope = await stores.envelopes.select("r1", 1)
        assert envelope is not None
        [(_, at)] = await stores.envelopes.list_versions("r1")
        for _ in range(2):
            await stores.envelopes.insert_version("r2", 5, envelope, at)
        assert await stores.envelopes.select("r2", 5) == envelope
        assert await stores.envelopes.list_versions("r2") == [(5, at)]
        assert (await stores.secrets.put("r2", b"next")).version == "6"
        await stores.envelopes.insert_version("r1", 1, envelope, at)
        assert await stores.secrets.get(original) == b"one"

    async def test_delete_and_list_keys(self, stores: Stores) -> None:
        """delete removes every version of a key; list_keys shows what is left."""
        ref = await stores.secrets.put("r1", b"x")
        await stores.secrets.put("r2", b"y")
        assert await stores.secrets.list_keys() == ["r1", "r2"]
        await stores.secrets.delete("r1")
        assert await stores.secrets.list_keys() == ["r2"]
        with pytest.raises(SecretMissing):
            await stores.secrets.get(ref)
        with pytest.raises(SecretMissing):
            await stores.secrets.get(SecretRef("local", "r2", "9"))
        await stores.secrets.check()
