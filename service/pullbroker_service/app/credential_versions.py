"""A registry's credential versions: the first is attached when the record is created, a
rotation tests the new one and keeps one step back, a rollback uses that step up.

Each write touches both the secret backend and the metadata store, and is ordered so a failure
leaves nothing half-done: a new record, written PENDING (no secret reference) by its creator,
is switched to READY only once its secret is stored; any failure deletes both.

A rotation first asks the registry whether it takes the new credential (the probe
TestConnection runs; skipped on request, for a registry that is down): if not, nothing is
written. Then it stores the new version and switches the reference (etag checked). The
version it replaced is kept as the record's previous version, for a rollback, until the next
rotation retires it; a rollback makes it current again and retires the rolled-back one.

A version no record references any more is retired (deleted) at once; a failure to delete
is only logged, since the reconciler removes strays later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import structlog

from pullbroker_service.app.lookup import load_credential, new_etag
from pullbroker_service.domain.errors import BrokerError, FailedPrecondition, SecretMissing
from pullbroker_service.domain.model import (
    Credential,
    RecordState,
    RegistryRecord,
    SecretRef,
    credential_to_bytes,
    credential_username,
)
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.store.base import HostCheck, MetadataStore

# Probe outcomes that say nothing about the credential: the registry could not be asked.
_NOT_ASKED = frozenset({"unreachable", "tls_failure", "rate_limited"})

log = structlog.get_logger()


class CredentialVersions:
    """Attaches, rotates and rolls back a record's credential; callers have checked its etag."""

    def __init__(
        self,
        store: MetadataStore,
        secrets: SecretBackend,
        minters: MintersByKind,
        cache: TokenCache,
        clock: Callable[[], datetime],
    ) -> None:
        self._store = store
        self._secrets = secrets
        self._minters = minters
        self._cache = cache
        self._clock = clock

    async def attach_first(self, pending: RegistryRecord, credential: Credential) -> RegistryRecord:
        """Store `credential` for the PENDING record just written and make the record READY;
        on any failure, delete both and raise."""
        try:
            ref = await self._secrets.put(pending.id, credential_to_bytes(credential))
            ready = replace(pending, secret_ref=ref, state=RecordState.READY, etag=new_etag())
            await self._store.replace(ready, pending.etag)
        except BaseException:
            await self._undo_create(pending.id)
            raise
        return ready

    async def require_accepted(self, current: RegistryRecord, credential: Credential) -> None:
        """Ask the registry whether it takes `credential`, as TestConnection does; a refusal
        (or no answer) is FailedPrecondition, before anything is written."""
        candidate = replace(current, username=credential_username(credential))
        result = await self._minters.for_kind(current.kind).probe(candidate, credential, "")
        if result.outcome == "ok":
            return
        advice = (
            "; if the registry is down, rotate without the test (skip_test)"
            if result.outcome in _NOT_ASKED
            else ""
        )
        raise FailedPrecondition(
            f"the new credential was not put in force (registry {current.display_name!r} "
            f"keeps its current one): {' '.join(result.message.split())}{advice}"
        )

    async def rotate(
        self,
        current: RegistryRecord,
        changed: RegistryRecord,
        credential: Credential,
        check: HostCheck | None,
    ) -> RegistryRecord:
        """Store `credential` as a new version and write `changed` pointing at it; the
        version it replaces becomes the previous one, and the one before that is retired."""
        new_ref = await self._secrets.put(current.id, credential_to_bytes(credential))
        old = current.secret_ref
        # The replaced version stays for a rollback, if it lives where rollbacks read from.
        keep = old if old is not None and old.backend == self._secrets.name else None
        rotated = replace(
            changed,
            secret_ref=new_ref,
            previous_secret_ref=keep,
            credential_version=current.credential_version + 1,
            username=credential_username(credential),
        )
        try:
            await self._store.replace(rotated, current.etag, check)
        except BaseException:
            try:
                await self._secrets.delete_version(new_ref)
            except BrokerError as exc:
                log.warning("rotation_rollback_failed", registry_id=current.id, error=str(exc))
            raise
        # One step back is kept: the version the previous rotation kept goes now.
        await self._retire(current.id, current.previous_secret_ref)
        if keep is None:
            await self._retire(current.id, old)
        return rotated

    async def roll_back(self, current: RegistryRecord) -> RegistryRecord:
        """Make the version the last rotation replaced current again; FailedPrecondition when
        there is none (never rotated, or rolled back already) or it is no longer stored."""
        previous = current.previous_secret_ref
        if previous is None:
            raise FailedPrecondition(
                f"registry {current.display_name!r} has no previous credential to roll back "
                "to: a rotation keeps the credential it replaced until the next rotation, and "
                "a rollback uses it up"
            )
        try:
            credential = await load_credential(self._secrets, replace(current, secret_ref=previous))
        except SecretMissing as exc:
            raise FailedPrecondition(
                f"the previous credential of registry {current.display_name!r} is no longer "
                "stored: rotate to a new credential instead"
            ) from exc
        rolled = replace(
            current,
            secret_ref=previous,
            previous_secret_ref=None,
            credential_version=current.credential_version + 1,
            username=credential_username(credential),
            update_time=self._clock(),
            etag=new_etag(),
        )
        await self._store.replace(rolled, current.etag)
        # Tokens minted from the rolled-back credential must not outlive it.
        self._cache.invalidate_registry(current.id)
        await self._retire(current.id, current.secret_ref)
        return rolled

    async def _undo_create(self, registry_id: str) -> None:
        try:
            await self._secrets.delete(registry_id)
        except BrokerError as exc:
            log.warning(
                "create_rollback_failed", registry_id=registry_id, step="secret", error=str(exc)
            )
        try:
            await self._store.delete(registry_id, None)
        except BrokerError as exc:
            log.warning(
                "create_rollback_failed", registry_id=registry_id, step="record", error=str(exc)
            )

    async def _retire(self, registry_id: str, ref: SecretRef | None) -> None:
        """Delete a version no record references any more; a failure is logged, and the
        reconciler removes the stray later."""
        if ref is None:
            return
        try:
            await self._secrets.delete_version(ref)
        except BrokerError as exc:
            log.warning("old_secret_delete_failed", registry_id=registry_id, error=str(exc))
