"""Deployment use cases: create, read, list, terminate, watch, and the nodes' status reports.

A deployment names its registry by id. An inline credential (the enclave case) becomes a
registry record of its own, created with the deployment and released (record and secret
deleted) when the deployment terminates, so the token path needs nothing new to serve it.

Creating re-reads the registry after the deployment is stored: a registry deleted in
between (its delete saw no reference yet) fails the create instead of leaving a deployment
pointing at nothing. Watchers wake on the change feed (store/changes.py): this broker's own
writes, and on PostgreSQL every replica's (LISTEN/NOTIFY); a feed that reconnected wakes
every watcher to re-read. They also re-read every `poll_interval` seconds (by default the
feed's resync interval) as a floor under anything a feed could lose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import datetime

import structlog
from pullbroker_client.registry import errors as registry_errors
from pullbroker_client.registry.reference import Reference, parse_reference

from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.lookup import new_etag, utc_now
from pullbroker_service.app.paging import paged
from pullbroker_service.app.policy_source import PolicyProvider
from pullbroker_service.app.registries import Registries
from pullbroker_service.domain.audit import Action, Outcome, outcome_for
from pullbroker_service.domain.deployment import (
    DeploymentRecord,
    DeploymentState,
    FailureCategory,
    Report,
    Target,
    check_deployment_id,
    deployment_id_of,
)
from pullbroker_service.domain.errors import (
    BackendUnavailable,
    BrokerError,
    EtagMismatch,
    FailedPrecondition,
    HostMismatch,
    InvalidArgument,
    InvalidReference,
    RegistryNotFound,
    ScopeNotAllowed,
    TargetNotAllowed,
)
from pullbroker_service.domain.hosts import canonical_image_host
from pullbroker_service.domain.identity import Identity
from pullbroker_service.domain.kinds import RegistrySpec
from pullbroker_service.domain.model import Credential, RegistryRecord
from pullbroker_service.store.changes import ChangeFeed, LocalChangeFeed
from pullbroker_service.store.deployments import DeploymentStore

log = structlog.get_logger()

_REPORT_ATTEMPTS = 5
_OUTAGE_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class NewDeployment:
    """What CreateDeployment asks for: `registry` names a saved registry, or `inline` holds a
    registry and credential for this deployment alone."""

    deployment_id: str
    image: str
    target: Target
    registry: str = ""
    inline: tuple[RegistrySpec, Credential] | None = None


class Deployments:
    """The DeploymentService use cases (role admin) and status reports (role node)."""

    def __init__(
        self,
        store: DeploymentStore,
        registries: Registries,
        policy: PolicyProvider,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = utc_now,
        poll_interval: float | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        self._store = store
        self._registries = registries
        self._policy = policy
        self._audit = audit
        self._clock = clock
        self._changes = changes or LocalChangeFeed()
        self._poll = poll_interval if poll_interval is not None else self._changes.resync_interval
        self._changed: dict[str, asyncio.Event] = {}
        self._changes.subscribe(self._on_change)

    async def create(self, caller: Identity, new: NewDeployment) -> DeploymentRecord:
        try:
            record = await self._create(caller, new)
        except BrokerError as exc:
            self._event(Action.DEPLOYMENT_CREATE, outcome_for(exc), caller, new.deployment_id, exc)
            raise
        self._event(Action.DEPLOYMENT_CREATE, Outcome.ALLOWED, caller, record)
        log.info(
            "deployment_created",
            deployment=record.id,
            registry_id=record.registry_id,
            target=record.target.policy_name,
            inline_credential=record.inline_credential,
            identity=caller.name,
        )
        return record

    async def get(self, name: str) -> DeploymentRecord:
        return await self._store.get(deployment_id_of(name))

    async def list(
        self, page_size: int, page_token: str, *, registry: str = "", include_terminated: bool
    ) -> tuple[list[DeploymentRecord], str]:
        registry_id = (await self._registries.get(registry)).id if registry else None
        return await paged(
            page_size,
            page_token,
            lambda limit, after: self._store.list_page(
                limit, after, registry_id=registry_id, include_terminated=include_terminated
            ),
        )

    async def terminate(self, caller: Identity, name: str, etag: str = "") -> DeploymentRecord:
        try:
            current = await self.get(name)
            if etag and etag != current.etag:
                raise EtagMismatch(
                    f"deployment {current.id!r} was changed since you read it (its etag is now "
                    f"{current.etag}): read it again and retry",
                    current_etag=current.etag,
                )
            ended = current.terminated(self._clock(), new_etag())
            await self._store.replace(ended, current.etag)
        except BrokerError as exc:
            self._event(Action.DEPLOYMENT_TERMINATE, outcome_for(exc), caller, name, exc)
            raise
        self._notify(ended.id)
        self._event(Action.DEPLOYMENT_TERMINATE, Outcome.ALLOWED, caller, ended)
        if ended.inline_credential:
            # The credential was this deployment's alone: it goes with it (audited there).
            await self._registries.release(caller, ended.registry_id)
        log.info("deployment_terminated", deployment=ended.id, identity=caller.name)
        return ended

    async def report(self, caller: Identity, name: str, report: Report) -> DeploymentRecord:
        """A node's status transition; the node must be allowed to pull the image."""
        try:
            record = await self._report(caller, deployment_id_of(name), report)
        except BrokerError as exc:
            self._event(Action.DEPLOYMENT_REPORT, outcome_for(exc), caller, name, exc)
            raise
        self._notify(record.id)
        reason = f"state {report.state.value}"
        if report.category is not FailureCategory.NONE:
            reason += f" ({report.category.value}): {report.message}"
        self._event(Action.DEPLOYMENT_REPORT, Outcome.ALLOWED, caller, record, reason=reason)
        log.info(
            "deployment_reported",
            deployment=record.id,
            state=record.state.value,
            failure_category=record.failure_category.value,
            digest=record.digest,
            identity=caller.name,
        )
        return record

    async def watch(self, name: str) -> AsyncIterator[DeploymentRecord]:
        """The deployment now, then each new version of it, ending once it is terminated."""
        deployment_id = deployment_id_of(name)
        seen = ""
        while True:
            # Take the event before reading, so a change in between is not slept through.
            changed = self._changed.setdefault(deployment_id, asyncio.Event())
            try:
                record = await self._store.get(deployment_id)
            except BackendUnavailable:
                if not seen:
                    raise
                # The stream outlives a database outage: read again once it may be back
                # (the change feed wakes every watcher when it reconnects).
                await asyncio.sleep(_OUTAGE_RETRY_SECONDS)
                continue
            if record.etag != seen:
                seen = record.etag
                yield record
            if record.state is DeploymentState.TERMINATED:
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), self._poll)

    async def _create(self, caller: Identity, new: NewDeployment) -> DeploymentRecord:
        check_deployment_id(new.deployment_id)
        ref = _parse(new.image)
        decision = self._policy.current().explain_target(caller.name, new.target.policy_name)
        if not decision.allowed:
            raise TargetNotAllowed(
                f"identity {caller.name} may not deploy to {new.target.policy_name}: "
                f"{decision.reason} (see policy.yaml)"
            )
        registry = await self._registry_for(caller, new)
        try:
            _check_host(ref, registry)
            now = self._clock()
            record = DeploymentRecord(
                id=new.deployment_id,
                image=str(ref),
                registry_id=registry.id,
                inline_credential=new.inline is not None,
                target=new.target,
                state=DeploymentState.PENDING_DEPLOY,
                failure_category=FailureCategory.NONE,
                message="",
                digest="",
                creator=caller.name,
                reported_by="",
                create_time=now,
                update_time=now,
                etag=new_etag(),
            )
            await self._store.create(record)
        except BaseException:
            if new.inline is not None:
                await self._registries.release(caller, registry.id)
            raise
        await self._confirm_registry(record)
        return record

    async def _registry_for(self, caller: Identity, new: NewDeployment) -> RegistryRecord:
        if new.inline is None:
            if not new.registry:
                raise InvalidArgument(
                    "name the deployment's registry (deployment.registry), or give an inline "
                    "registry and credential for this deployment alone"
                )
            return await self._registries.get(new.registry)
        if new.registry:
            raise InvalidArgument("give either deployment.registry or an inline registry, not both")
        spec, credential = new.inline
        if not spec.display_name:
            spec = replace(spec, display_name=inline_registry_name(new.deployment_id))
        return await self._registries.create(caller, spec, credential, test=False)

    async def _confirm_registry(self, record: DeploymentRecord) -> None:
        try:
            await self._registries.get(f"registries/{record.registry_id}")
        except RegistryNotFound:
            await self._store.delete(record.id)
            raise FailedPrecondition(
                f"registry registries/{record.registry_id} was deleted while deployment "
                f"{record.id!r} was being created: create it again with an existing registry"
            ) from None

    async def _report(
        self, caller: Identity, deployment_id: str, report: Report
    ) -> DeploymentRecord:
        for _ in range(_REPORT_ATTEMPTS):
            current = await self._store.get(deployment_id)
            await self._check_reporter(caller, current)
            updated = current.reported(report, caller.name, self._clock(), new_etag())
            try:
                await self._store.replace(updated, current.etag)
            except EtagMismatch:
                continue  # another node reported at the same moment: apply ours on top
            return updated
        raise EtagMismatch(f"deployment {deployment_id!r} keeps changing: retry the report")

    async def _check_reporter(self, caller: Identity, record: DeploymentRecord) -> None:
        registry = await self._registries.get(f"registries/{record.registry_id}")
        repository = _parse(record.image).repository
        decision = self._policy.current().explain(caller.name, registry, repository)
        if not decision.allowed:
            raise ScopeNotAllowed(
                f"identity {caller.name} may not report on deployment {record.id!r}: "
                f"{decision.reason} (a node reports only on images it may pull)"
            )

    def _notify(self, deployment_id: str) -> None:
        self._changes.publish(deployment_id)

    def _on_change(self, deployment_id: str | None) -> None:
        """Wake the watchers of `deployment_id` (of every deployment when None)."""
        if deployment_id is None:
            woken, self._changed = list(self._changed.values()), {}
        else:
            changed = self._changed.pop(deployment_id, None)
            woken = [changed] if changed is not None else []
        for event in woken:
            event.set()

    def _event(
        self,
        action: Action,
        outcome: Outcome,
        caller: Identity,
        subject: DeploymentRecord | str,
        error: BaseException | None = None,
        *,
        reason: str = "",
    ) -> None:
        if self._audit is None:
            return
        if isinstance(subject, DeploymentRecord):
            name, registry = subject.resource_name, f"registries/{subject.registry_id}"
            repository, digest = _repository_of(subject.image), subject.digest
        else:
            name, registry, repository, digest = subject, "", "", ""
        self._audit.event(
            action,
            outcome,
            caller,
            registry=registry,
            repository=repository,
            deployment=name,
            digest=digest,
            reason=str(error) if error is not None else reason,
        )


def inline_registry_name(deployment_id: str) -> str:
    """The display name of a deployment's own registry record: "<id>-inline" (<= 63 chars)."""
    return f"{deployment_id[:56]}-inline"


def _parse(image: str) -> Reference:
    try:
        return parse_reference(image)
    except registry_errors.InvalidReference as exc:
        raise InvalidReference(str(exc)) from exc


def _repository_of(image: str) -> str:
    try:
        return parse_reference(image).repository
    except registry_errors.InvalidReference:
        return ""


def _check_host(ref: Reference, registry: RegistryRecord) -> None:
    host = canonical_image_host(ref.registry_host)
    if canonical_image_host(registry.host) != host:
        raise HostMismatch(
            f"image {ref} is on host {host}, but registry {registry.display_name!r} holds a "
            f"credential for {registry.host}: pick the registry for {host}"
        )
