"""Finishing what a crash or an outage left half-done between the metadata store and the
secret backend. Runs at start-up and then periodically; every step is idempotent.

On several replicas, one at a time runs the passes: the one holding the periodic-jobs lock
(store/job_lock.py; a session advisory lock on PostgreSQL, which moves when its holder dies).

1. PENDING records older than the grace period are rolled back: the record is deleted
   (etag-checked, so a create that just finished wins), then its secret. Rolled back rather
   than completed, even when the secret is stored and readable: the create never answered
   success (the broker crashed or the backend failed in the middle), so its caller retries
   or gives up. Completing it would leave a registry nobody knows exists, whose display name
   makes the caller's retry fail with ALREADY_EXISTS, holding a credential that was never
   confirmed. Rolling back is always safe: no READY record, hence no token, uses that
   secret. Younger PENDING records may be creates still in flight (here or on a replica).
2. Orphaned keys are deleted. A key with no record at all goes at once: keys are listed
   before records are read, and a create writes its record before its secret, so an
   in-flight create's key always has a record. A key whose READY record does not reference
   this backend (a migration or an odd update left it) goes once all its versions are older
   than the grace period.
3. Full passes also look at every READY record on this backend: live versions other than
   the referenced one and the previous one (kept for a rollback), older than the grace
   period, are strays of an interrupted rotation (stored, but the reference never switched)
   or of a rollback whose clean-up failed, and are deleted; a record whose referenced
   version is gone is reported as dangling, never "repaired" by guessing a version.

A version that a READY record references (as current or previous) is never deleted: the
record is read again right before each deletion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

import structlog

from pullbroker_service.app.lookup import utc_now
from pullbroker_service.domain.errors import BackendUnavailable, BrokerError, RegistryNotFound
from pullbroker_service.domain.model import RecordState, RegistryRecord, SecretRef
from pullbroker_service.secrets.factory import VersionedBackend
from pullbroker_service.store.base import MetadataStore
from pullbroker_service.store.job_lock import JobLock, LocalJobLock

log = structlog.get_logger()
T = TypeVar("T")

DEFAULT_GRACE_SECONDS = 120.0
FULL_PASS_EVERY = 10
_PAGE = 500


@dataclass
class ReconcileReport:
    """What one pass did (ids and references only)."""

    rolled_back: list[str] = field(default_factory=list)
    """PENDING records removed, with their secrets."""
    orphans: list[str] = field(default_factory=list)
    """Keys deleted whole: no record had them."""
    strays: list[SecretRef] = field(default_factory=list)
    """Versions deleted: stored but referenced by no record."""
    dangling: list[str] = field(default_factory=list)
    """READY records whose referenced version is gone (an operator must rotate them)."""
    waiting: int = 0
    """PENDING records left alone because they are younger than the grace period."""

    @property
    def changed(self) -> bool:
        return bool(self.rolled_back or self.orphans or self.strays)


class Reconciler:
    """Reconciles `store` with `secrets` (the backend new credentials are written to)."""

    def __init__(
        self,
        store: MetadataStore,
        secrets: VersionedBackend,
        *,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        clock: Callable[[], datetime] = utc_now,
        lock: JobLock | None = None,
    ) -> None:
        self._lock = lock or LocalJobLock()
        self._store = store
        self._secrets = secrets
        self._grace = timedelta(seconds=grace_seconds)
        self._clock = clock

    async def run_once(self, *, full: bool = True) -> ReconcileReport:
        """One pass; BackendUnavailable aborts it (the next pass starts over)."""
        report = ReconcileReport()
        await self._roll_back_pending(report)
        await self._remove_orphans(report)
        if full:
            await self._check_references(report)
        if report.changed or report.dangling:
            log.info(
                "secrets_reconciled",
                backend=self._secrets.name,
                rolled_back=report.rolled_back,
                orphans_removed=report.orphans,
                strays_removed=len(report.strays),
                dangling=report.dangling,
            )
        return report

    async def run_periodically(self, interval: float, *, full_every: int = FULL_PASS_EVERY) -> None:
        """Pass after pass until cancelled, the first one full; a failed pass is logged and
        the next one tries again. Only while this replica holds the periodic-jobs lock: the
        others check every `interval` and take over when the holder is gone (its first pass
        then is a full one)."""
        passes = 0
        while True:
            if await self._lock.held():
                try:
                    await self.run_once(full=passes % full_every == 0)
                    passes += 1
                except BrokerError as exc:
                    log.warning(
                        "secrets_reconcile_failed", backend=self._secrets.name, error=str(exc)
                    )
            else:
                passes = 0
            await asyncio.sleep(interval)

    def _old(self, when: datetime) -> bool:
        return self._clock() - when >= self._grace

    async def _roll_back_pending(self, report: ReconcileReport) -> None:
        for record in await self._store.list_pending():
            if not self._old(record.update_time):
                report.waiting += 1
                continue
            try:
                await self._store.delete(record.id, record.etag)
            except BrokerError as exc:  # finished or deleted meanwhile: not ours any more
                log.info("pending_record_moved_on", registry_id=record.id, error=str(exc))
                continue
            await self._secrets.delete(record.id)
            report.rolled_back.append(record.id)

    async def _remove_orphans(self, report: ReconcileReport) -> None:
        for key in await self._secrets.list_keys():
            record = await self._record(key)
            if record is None:
                await self._secrets.delete(key)
                report.orphans.append(key)
            elif record.state is RecordState.READY and not self._references_us(record):
                # Deleted whole, not version by version: a backend may refuse to delete a
                # key's last live version on its own (Secrets Manager's AWSCURRENT).
                versions = await self._secrets.list_versions(key)
                if all(self._old(created) for _, created in versions):
                    await self._secrets.delete(key)
                    report.orphans.append(key)

    async def _check_references(self, report: ReconcileReport) -> None:
        after: str | None = None
        while page := await self._store.list_page(_PAGE, after):
            after = page[-1].id
            for record in page:
                if record.state is RecordState.READY and self._references_us(record):
                    await self._check_record(record, report)

    async def _check_record(self, record: RegistryRecord, report: ReconcileReport) -> None:
        assert record.secret_ref is not None  # _references_us
        live = await self._secrets.list_versions(record.id)
        if record.secret_ref not in (ref for ref, _ in live):
            fresh = await self._record(record.id)
            if fresh is not None and fresh.secret_ref == record.secret_ref:
                report.dangling.append(record.id)
                log.error(
                    "secret_reference_dangling",
                    registry_id=record.id,
                    display_name=record.display_name,
                    backend=self._secrets.name,
                    hint="the referenced credential version is gone: rotate the credential",
                )
        await self._remove_strays(record, report, live)

    async def _remove_strays(
        self,
        record: RegistryRecord,
        report: ReconcileReport,
        live: list[tuple[SecretRef, datetime]],
    ) -> None:
        key = record.id
        for ref, created in live:
            if ref in _referenced(record) or not self._old(created):
                continue
            fresh = await self._record(key)  # a rotation may have switched to it meanwhile
            if fresh is not None and ref in _referenced(fresh):
                continue
            if await self._attempt(self._secrets.delete_version(ref), key):
                report.strays.append(ref)

    def _references_us(self, record: RegistryRecord) -> bool:
        return record.secret_ref is not None and record.secret_ref.backend == self._secrets.name

    async def _record(self, registry_id: str) -> RegistryRecord | None:
        try:
            return await self._store.get(registry_id)
        except RegistryNotFound:
            return None

    async def _attempt(self, call: Awaitable[T], key: str) -> bool:
        """Run one clean-up step; an outage aborts the pass, any other refusal skips it."""
        try:
            await call
        except BackendUnavailable:
            raise
        except BrokerError as exc:
            log.warning("secret_cleanup_skipped", key=key, error=str(exc))
            return False
        return True


def _referenced(record: RegistryRecord) -> tuple[SecretRef | None, SecretRef | None]:
    """The versions a record uses: the current one, and the one kept for a rollback."""
    return (record.secret_ref, record.previous_secret_ref)
