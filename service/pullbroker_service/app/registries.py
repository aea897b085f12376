"""Registry use cases: create, read, list, update (rename, rotate), delete, test.

A new record with a credential is written PENDING (no secret reference) and switched to READY
once its secret is stored; a rotation is tested before it takes effect and keeps the version it
replaced for a rollback. Those writes, ordered so a failure leaves nothing half-done, are
app/credential_versions.py's.

Two records of one host may not tie for a repository (app/ambiguity.py): create, and an
update that changes the globs, are checked early (before a probe) and again by the store,
atomically with the write, so concurrent writers on any replicas cannot both pass.

Lifecycle: only the record's creator, or a member of an owner group the policy names for it,
may delete it, and only while no deployment uses it (StillReferenced names them). Every
operation, allowed or not, is an audit event when an AuditSink is given.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import structlog

from pullbroker_service.app.ambiguity import ambiguity_check
from pullbroker_service.app.audit import AuditSink, audited
from pullbroker_service.app.credential_versions import CredentialVersions
from pullbroker_service.app.lifecycle import DeletionRules
from pullbroker_service.app.lookup import (
    load_credential,
    new_etag,
    new_registry_id,
    require_ready,
    resolve,
    utc_now,
)
from pullbroker_service.app.paging import paged
from pullbroker_service.app.ratelimit import LimitKind, RateLimiter
from pullbroker_service.app.registry_records import build_record, updated_spec
from pullbroker_service.domain.audit import Action, Outcome
from pullbroker_service.domain.errors import (
    BrokerError,
    EtagMismatch,
    FailedPrecondition,
    InvalidArgument,
)
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import (
    DEFAULT_SETTINGS,
    KindInfo,
    KindSettings,
    RegistrySpec,
    check_credential,
    kind_catalogue,
    validate_registry,
    validate_spec,
)
from pullbroker_service.domain.model import (
    Credential,
    RecordState,
    RegistryRecord,
)
from pullbroker_service.minting.base import ProbeResult
from pullbroker_service.minting.by_kind import MintersByKind
from pullbroker_service.minting.cache import TokenCache
from pullbroker_service.secrets.base import SecretBackend
from pullbroker_service.store.base import MetadataStore

T = TypeVar("T")

log = structlog.get_logger()


class Registries:
    """The RegistryService use cases. Callers have been authorised (role admin) already."""

    def __init__(
        self,
        store: MetadataStore,
        secrets: SecretBackend,
        minters: MintersByKind,
        cache: TokenCache,
        *,
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = new_registry_id,
        kind_settings: KindSettings = DEFAULT_SETTINGS,
        deletion: DeletionRules | None = None,
        audit: AuditSink | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._deletion = deletion or DeletionRules()
        self._audit = audit
        self._limiter = limiter
        self._store = store
        self._secrets = secrets
        self._minters = minters
        self._cache = cache
        self._clock = clock
        self._new_id = new_id
        self._settings = kind_settings
        self._versions = CredentialVersions(store, secrets, minters, cache, clock)

    async def create(
        self, caller: Identity, spec: RegistrySpec, credential: Credential | None, test: bool
    ) -> RegistryRecord:
        work = self._create(caller, spec, credential, test)
        return await self._audited(Action.REGISTRY_CREATE, caller, spec.display_name, work)

    async def _create(
        self, caller: Identity, spec: RegistrySpec, credential: Credential | None, test: bool
    ) -> RegistryRecord:
        valid = validate_registry(spec, credential, self._settings)
        unambiguous = ambiguity_check(valid.host, valid.spec.display_name, valid.spec.repositories)
        # Early, before a probe, on what is READY; the store checks again, atomically.
        unambiguous(await self._store.find_by_host(valid.host))
        minter = self._minters.for_kind(valid.spec.kind)
        if test:
            unsaved = build_record(valid, credential, self._clock())
            result = await minter.probe(unsaved, credential, "")
            if result.outcome != "ok":
                raise FailedPrecondition(f"the connection test failed: {result.message}")
        record = build_record(
            valid,
            credential,
            self._clock(),
            registry_id=self._new_id(),
            creator=caller.name,
            etag=new_etag(),
            state=RecordState.PENDING if credential is not None else RecordState.READY,
        )
        await self._store.create(record, unambiguous)
        if credential is not None:
            record = await self._versions.attach_first(record, credential)
        log.info(
            "registry_created",
            registry_id=record.id,
            display_name=record.display_name,
            kind=record.kind.value,
            host=record.host,
            identity=caller.name,
            tested=test,
        )
        return record

    async def get(self, name: str) -> RegistryRecord:
        return await resolve(self._store, name)

    async def list(self, page_size: int, page_token: str) -> tuple[list[RegistryRecord], str]:
        return await paged(page_size, page_token, self._store.list_page)

    async def update(
        self,
        caller: Identity,
        name: str,
        etag: str,
        *,
        display_name: str | None,
        registry_ca_pem: str | None,
        allow_basic_passthrough: bool | None,
        credential: Credential | None,
        test: bool = True,
        repositories: tuple[str, ...] | None = None,
    ) -> RegistryRecord:
        """Change settings and/or rotate the credential; with `test`, a rotation happens only
        if the registry accepts the new credential."""
        action = Action.REGISTRY_UPDATE if credential is None else Action.CREDENTIAL_ROTATE
        work = self._update(
            caller,
            name,
            etag,
            display_name=display_name,
            registry_ca_pem=registry_ca_pem,
            allow_basic_passthrough=allow_basic_passthrough,
            credential=credential,
            test=test,
            repositories=repositories,
        )
        return await self._audited(action, caller, name, work)

    async def _update(
        self,
        caller: Identity,
        name: str,
        etag: str,
        *,
        display_name: str | None,
        registry_ca_pem: str | None,
        allow_basic_passthrough: bool | None,
        credential: Credential | None,
        test: bool,
        repositories: tuple[str, ...] | None,
    ) -> RegistryRecord:
        current = await self._current(name, etag)
        wanted = updated_spec(
            current,
            display_name=display_name,
            registry_ca_pem=registry_ca_pem,
            allow_basic_passthrough=allow_basic_passthrough,
            repositories=repositories,
        )
        valid = validate_spec(wanted, self._settings).spec
        unambiguous = None
        # A rename is checked too: it changes which records of the host a racing create
        # must be compared with, so it takes the host's turn like any checked write.
        if (valid.repositories, valid.display_name) != (current.repositories, current.display_name):
            unambiguous = ambiguity_check(
                current.host, valid.display_name, valid.repositories, current.id
            )
            unambiguous(await self._store.find_by_host(current.host))
        if credential is not None:
            check_credential(current.kind, credential, url=current.url, settings=self._settings)
            if test:
                await self._versions.require_accepted(current, credential)
        changed = replace(
            current,
            display_name=valid.display_name,
            registry_ca_pem=valid.registry_ca_pem,
            allow_basic_passthrough=valid.allow_basic_passthrough,
            repositories=valid.repositories,
            update_time=self._clock(),
            etag=new_etag(),
        )
        if credential is None:
            await self._store.replace(changed, etag, unambiguous)
        else:
            changed = await self._versions.rotate(current, changed, credential, unambiguous)
        # Settings such as the CA or pass-through change what a minted token may be.
        self._cache.invalidate_registry(current.id)
        log.info(
            "registry_updated",
            registry_id=current.id,
            display_name=changed.display_name,
            identity=caller.name,
            credential_rotated=credential is not None,
            credential_version=changed.credential_version,
        )
        return changed

    async def rollback(self, caller: Identity, name: str, etag: str) -> RegistryRecord:
        """Make the version the last rotation replaced current again; FailedPrecondition when
        there is none (never rotated, or rolled back already)."""
        work = self._rollback(caller, name, etag)
        return await self._audited(Action.CREDENTIAL_ROLLBACK, caller, name, work)

    async def _rollback(self, caller: Identity, name: str, etag: str) -> RegistryRecord:
        current = await self._current(name, etag)
        rolled = await self._versions.roll_back(current)
        log.info(
            "registry_credential_rolled_back",
            registry_id=current.id,
            display_name=current.display_name,
            identity=caller.name,
            credential_version=rolled.credential_version,
        )
        return rolled

    def kinds(self) -> tuple[KindInfo, ...]:
        """The kind catalogue: every kind and the fields a CreateRegistry for it takes."""
        return kind_catalogue()

    async def delete(self, caller: Identity, name: str, etag: str | None) -> None:
        await self._audited(Action.REGISTRY_DELETE, caller, name, self._delete(caller, name, etag))

    async def _delete(self, caller: Identity, name: str, etag: str | None) -> RegistryRecord:
        record = await resolve(self._store, name)
        await self._deletion.check(caller, record)
        await self._remove(record, etag, caller)
        return record

    async def release(self, caller: Identity, registry_id: str) -> None:
        """Delete a deployment's own (inline) registry and its secret when the deployment
        ends: no owner or reference check, since the deployment was its only user."""
        label = f"registries/{registry_id}"
        work = self._release(caller, registry_id)
        await self._audited(Action.CREDENTIAL_DELETE, caller, label, work)

    async def _release(self, caller: Identity, registry_id: str) -> RegistryRecord:
        record = await self._store.get(registry_id)
        await self._remove(record, None, caller, strict=True)
        return record

    async def _remove(
        self, record: RegistryRecord, etag: str | None, caller: Identity, *, strict: bool = False
    ) -> None:
        await self._store.delete(record.id, etag or None)
        self._cache.invalidate_registry(record.id)
        try:
            await self._secrets.delete(record.id)
        except BrokerError as exc:
            # The record is gone, so the secret is an orphan the reconciler removes later;
            # failing a delete now would tell the caller the delete did not happen. A
            # release (strict) must say so: its whole point is that the secret is gone.
            log.warning("secret_delete_failed", registry_id=record.id, error=str(exc))
            if strict:
                raise
        log.info(
            "registry_deleted",
            registry_id=record.id,
            display_name=record.display_name,
            identity=caller.name,
        )

    async def test(
        self,
        name: str | None,
        spec: RegistrySpec | None,
        credential: Credential | None,
        repository: str,
        *,
        caller: Identity | None = None,
    ) -> ProbeResult:
        """Probe a saved registry (optionally with a new credential) or an unsaved one.

        With a `caller`, the per-identity TestConnection limit applies and the test is audited.
        """
        label = name or (spec.display_name if spec is not None else "")
        work = self._test(name, spec, credential, repository, caller)
        result = await self._audited(Action.CONNECTION_TEST, caller, label, work, repository)
        return result

    async def _test(
        self,
        name: str | None,
        spec: RegistrySpec | None,
        credential: Credential | None,
        repository: str,
        caller: Identity | None,
    ) -> ProbeResult:
        if caller is not None and self._limiter is not None:
            self._limiter.check(caller.name, LimitKind.TEST_CONNECTION)
        if bool(name) == (spec is not None):
            raise InvalidArgument("test either a saved registry (name) or a new one (registry)")
        if name:
            record = require_ready(await resolve(self._store, name))
            if credential is None:
                credential = await load_credential(self._secrets, record)
            else:
                check_credential(record.kind, credential, url=record.url, settings=self._settings)
        else:
            assert spec is not None  # guaranteed by the check above
            valid = validate_registry(spec, credential, self._settings)
            record = build_record(valid, credential, self._clock())
        minter = self._minters.for_kind(record.kind)
        return await minter.probe(record, credential, repository)

    async def _audited(
        self,
        action: Action,
        caller: Identity | None,
        label: str,
        work: Awaitable[T],
        repository: str = "",
    ) -> T:
        return await audited(
            self._audit, action, caller, label, work, repository=repository, judge=_judge
        )

    async def _current(self, name: str, etag: str) -> RegistryRecord:
        """The READY record `name`, if `etag` is still its etag."""
        if not etag:
            raise InvalidArgument("etag is required: read the registry and send back its etag")
        current = require_ready(await resolve(self._store, name))
        if current.etag != etag:
            raise EtagMismatch(
                f"registry {current.display_name!r} was changed since you read it (its etag is "
                f"now {current.etag}): read it again and retry",
                current_etag=current.etag,
            )
        return current


def _judge(result: object) -> tuple[Outcome, str]:
    """A connection test that ran but did not pass is a FAILED audit event."""
    if isinstance(result, ProbeResult) and result.outcome != "ok":
        return Outcome.FAILED, f"{result.outcome}: {result.message}"
    return Outcome.ALLOWED, ""
