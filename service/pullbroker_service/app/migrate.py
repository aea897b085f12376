"""Moving every credential to another secret backend (`pullbroker secrets migrate`).

Offline: the broker is stopped and this works on the metadata store directly (the CLI holds
the home folder's lock, which a running broker also holds, and leaves a marker that keeps a
broker from starting until a migration has finished). Offline, because a broker running
beside it would rotate, create and delete credentials between the copy and the switch, and
would read each record's reference through one configured backend only.

For each READY record whose reference is not on the target:

1. the referenced version is read from its backend;
2. it is put on the target and read back: the copy must equal the original byte for byte,
   else the copy is deleted and the record stays where it was;
3. the record's reference is switched (etag-checked), and older versions of the key on the
   target (half-copies of an interrupted run) are deleted;
4. the key is deleted from the old backend.

Resumable and idempotent: a re-run skips records already on the target; a half-copy left by
an interruption is a version no record references, replaced by the next copy and deleted
after the switch; old backends are reconciled at start and end, which rolls back crashed
creates, removes orphans, and deletes keys of records that already moved.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import structlog

from pullbroker_service.app.lookup import new_etag, utc_now
from pullbroker_service.app.reconciler import Reconciler
from pullbroker_service.domain.errors import (
    BackendUnavailable,
    BrokerError,
    RegistryNotFound,
    SecretCorrupted,
)
from pullbroker_service.domain.model import RecordState, RegistryRecord
from pullbroker_service.secrets.factory import VersionedBackend
from pullbroker_service.store.base import MetadataStore

log = structlog.get_logger()
_PAGE = 500


@dataclass
class MigrationReport:
    """What a run did, by registry id."""

    moved: list[str] = field(default_factory=list)
    """Copied, verified, switched to the target."""
    already: list[str] = field(default_factory=list)
    """On the target before this run."""
    failed: dict[str, str] = field(default_factory=dict)
    """Left where they were, with the reason (for a person)."""
    cleaned: int = 0
    """Secrets and versions removed from the backends (leftovers, orphans, half-copies)."""

    @property
    def complete(self) -> bool:
        return not self.failed


class Migration:
    """Moves every record's credential to `target`.

    `sources` maps backend names to backends for every backend a record may reference (the
    configured one, and others a previous, interrupted run moved some records to).
    """

    def __init__(
        self,
        store: MetadataStore,
        sources: Mapping[str, VersionedBackend],
        target: VersionedBackend,
        *,
        progress: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self._store = store
        self._sources = {n: b for n, b in sources.items() if n != target.name}
        self._target = target
        self._progress = progress

    async def run(self) -> MigrationReport:
        """One run; BackendUnavailable stops it (re-run to resume), other refusals only skip
        the record concerned."""
        report = MigrationReport()
        await self._reconcile_sources(report)
        for record in await self._all_records():
            if record.secret_ref is None or record.state is not RecordState.READY:
                continue
            if record.secret_ref.backend == self._target.name:
                report.already.append(record.id)
                continue
            try:
                await self._move(record, report)
            except BackendUnavailable:
                raise
            except BrokerError as exc:
                report.failed[record.id] = str(exc)
                self._progress(f"NOT moved {record.resource_name} ({record.display_name}): {exc}")
        await self._reconcile_sources(report)
        await self._remove_target_orphans(report)
        log.info(
            "secrets_migrated",
            target=self._target.name,
            moved=len(report.moved),
            already=len(report.already),
            failed=sorted(report.failed),
        )
        return report

    async def _move(self, record: RegistryRecord, report: MigrationReport) -> None:
        ref = record.secret_ref
        assert ref is not None  # checked by run()
        source = self._sources.get(ref.backend)
        if source is None:
            raise BackendUnavailable(
                f"registry {record.display_name!r} is stored in the {ref.backend} backend, "
                f"which the configuration does not describe: add its `{ref.backend}` section",
                retry_after=None,
            )
        value = await source.get(ref)
        copy_ref = await self._target.put(record.id, value)
        if not hmac.compare_digest(await self._target.get(copy_ref), value):
            await self._target.delete_version(copy_ref)
            raise SecretCorrupted(
                f"the copy of {record.display_name!r} read back from {self._target.name} "
                "differs from the original: it was deleted and the record left as it was"
            )
        # Only the current version moves: the source, with the previous one, is deleted.
        switched = replace(
            record,
            secret_ref=copy_ref,
            previous_secret_ref=None,
            etag=new_etag(),
            update_time=utc_now(),
        )
        await self._store.replace(switched, record.etag)
        for old, _ in await self._target.list_versions(record.id):
            if old != copy_ref:
                await self._target.delete_version(old)
                report.cleaned += 1
        try:
            await source.delete(record.id)
        except BrokerError as exc:  # the record has moved; the end-of-run pass retries this
            log.warning("migrated_source_delete_failed", registry_id=record.id, error=str(exc))
        report.moved.append(record.id)
        self._progress(
            f"moved {record.resource_name} ({record.display_name}): "
            f"{ref.backend} -> {self._target.name}"
        )

    async def _reconcile_sources(self, report: MigrationReport) -> None:
        # Offline, nothing is in flight: no grace period.
        for source in self._sources.values():
            done = await Reconciler(self._store, source, grace_seconds=0).run_once(full=False)
            report.cleaned += len(done.rolled_back) + len(done.orphans) + len(done.strays)

    async def _remove_target_orphans(self, report: MigrationReport) -> None:
        """Keys on the target that no record has (a record's own half-copies stay: the next
        run writes over and then deletes them)."""
        for key in await self._target.list_keys():
            try:
                await self._store.get(key)
            except RegistryNotFound:
                await self._target.delete(key)
                report.cleaned += 1

    async def _all_records(self) -> list[RegistryRecord]:
        records: list[RegistryRecord] = []
        after: str | None = None
        while page := await self._store.list_page(_PAGE, after):
            records += page
            after = page[-1].id
        return records
