"""Moving a home's metadata from its SQLite files to PostgreSQL
(`pullbroker secrets migrate --to-database`).

Offline, like the secret-backend migration (migrate.py): the CLI holds the home folder's lock
exclusively, so no broker writes the SQLite files meanwhile. Three things are copied:

1. every registry record and every deployment (terminated ones too), each an upsert keyed
   by id, so a re-run after an interruption writes the same rows again and never adds one;
2. the local secret backend's envelopes, ciphertexts as they are (same keys, version numbers
   and KEK names): the KEK stays where it is configured, nothing is decrypted;
3. then everything is read back from PostgreSQL and compared with SQLite: the counts, every
   field of every record, every envelope byte for byte. A difference stops the move with
   MigrationMismatch naming it.

SQLite is only ever read: after a failure the home still serves from it as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol, TypeVar

import structlog

from pullbroker_service.domain.deployment import DeploymentRecord
from pullbroker_service.domain.errors import MigrationMismatch
from pullbroker_service.domain.model import RegistryRecord
from pullbroker_service.secrets.envelopes import EnvelopeTable
from pullbroker_service.store.base import MetadataStore
from pullbroker_service.store.deployments import DeploymentStore

log = structlog.get_logger()
_PAGE = 500
T = TypeVar("T")


class RecordSink(Protocol):
    """A registry store that takes copies (PostgresMetadataStore)."""

    async def upsert(self, record: RegistryRecord) -> None: ...

    async def list_page(self, page_size: int, after_id: str | None) -> list[RegistryRecord]: ...


class DeploymentSink(Protocol):
    """A deployment store that takes copies (PostgresDeploymentStore)."""

    async def upsert(self, record: DeploymentRecord) -> None: ...

    async def list_page(
        self,
        page_size: int,
        after_id: str | None,
        *,
        registry_id: str | None = None,
        include_terminated: bool = False,
    ) -> list[DeploymentRecord]: ...


@dataclass(frozen=True)
class Side:
    """One side of the move: where registries, deployments and envelopes are."""

    registries: Any
    deployments: Any
    envelopes: EnvelopeTable | None


@dataclass
class MoveReport:
    registries: int = 0
    deployments: int = 0
    envelopes: int = 0

    def summary(self) -> str:
        return (
            f"copied and verified {self.registries} registries, {self.deployments} "
            f"deployments and {self.envelopes} secret envelopes into the database"
        )


_Envelopes = dict[tuple[str, int], tuple[tuple[str, bytes, bytes, bytes], datetime]]


class DatabaseMove:
    """Copies `source` (SQLite) into `target` (PostgreSQL), then verifies the copy."""

    def __init__(
        self,
        source_registries: MetadataStore,
        source_deployments: DeploymentStore,
        source_envelopes: EnvelopeTable | None,
        target_registries: RecordSink,
        target_deployments: DeploymentSink,
        target_envelopes: EnvelopeTable | None,
    ) -> None:
        self._src = Side(source_registries, source_deployments, source_envelopes)
        self._dst = Side(target_registries, target_deployments, target_envelopes)

    async def run(self) -> MoveReport:
        registries = await _registries(self._src)
        deployments = await _deployments(self._src)
        envelopes = await _envelopes(self._src.envelopes)
        if envelopes and self._dst.envelopes is None:
            raise MigrationMismatch("the target has no envelope table for the local secrets")
        for record in registries.values():
            await self._dst.registries.upsert(record)
        for deployment in deployments.values():
            await self._dst.deployments.upsert(deployment)
        for (key, version), (envelope, at) in envelopes.items():
            assert self._dst.envelopes is not None
            await self._dst.envelopes.insert_version(key, version, envelope, at)
        log.info(
            "metadata_copied",
            registries=len(registries),
            deployments=len(deployments),
            envelopes=len(envelopes),
        )
        await self._verify(registries, deployments, envelopes)
        return MoveReport(len(registries), len(deployments), len(envelopes))

    async def _verify(
        self,
        registries: dict[str, RegistryRecord],
        deployments: dict[str, DeploymentRecord],
        envelopes: _Envelopes,
    ) -> None:
        _compare("registry", registries, await _registries(self._dst))
        _compare("deployment", deployments, await _deployments(self._dst))
        copied = await _envelopes(self._dst.envelopes)
        _same_ids("secret envelope", envelopes, copied)
        for (key, version), (envelope, at) in envelopes.items():
            theirs, their_at = copied[(key, version)]
            names = ("kek", "wrapped_key", "nonce", "ciphertext")
            for name, mine, other in zip(names, envelope, theirs, strict=True):
                if mine != other:
                    raise MigrationMismatch(
                        f"secret envelope {key} version {version}: {name} differs in the database"
                    )
            if at != their_at:
                raise MigrationMismatch(
                    f"secret envelope {key} version {version}: created_at differs in the database"
                )


def _compare(what: str, mine: dict[str, Any], theirs: dict[str, Any]) -> None:
    _same_ids(what, mine, theirs)
    for ident, record in mine.items():
        other = theirs[ident]
        for f in fields(record):
            if getattr(record, f.name) != getattr(other, f.name):
                raise MigrationMismatch(
                    f"{what} {ident}: field {f.name} differs in the database "
                    f"({getattr(other, f.name)!r} instead of {getattr(record, f.name)!r})"
                    if f.name not in _OPAQUE
                    else f"{what} {ident}: field {f.name} differs in the database"
                )


_OPAQUE = frozenset({"secret_ref", "previous_secret_ref"})


def _same_ids(what: str, mine: dict[Any, Any], theirs: dict[Any, Any]) -> None:
    missing = sorted(set(mine) - set(theirs), key=str)
    extra = sorted(set(theirs) - set(mine), key=str)
    if missing or extra:
        raise MigrationMismatch(
            f"{len(mine)} {what}s in SQLite, {len(theirs)} in the database"
            + (f"; missing there: {', '.join(map(str, missing[:5]))}" if missing else "")
            + (f"; only there: {', '.join(map(str, extra[:5]))}" if extra else "")
        )


async def _pages(
    read: Callable[[str | None], Awaitable[list[T]]], ident: Callable[[T], str]
) -> dict[str, T]:
    found: dict[str, T] = {}
    after: str | None = None
    while page := await read(after):
        for item in page:
            found[ident(item)] = item
        after = ident(page[-1])
    return found


async def _registries(side: Side) -> dict[str, RegistryRecord]:
    return await _pages(lambda after: side.registries.list_page(_PAGE, after), lambda r: r.id)


async def _deployments(side: Side) -> dict[str, DeploymentRecord]:
    return await _pages(
        lambda after: side.deployments.list_page(_PAGE, after, include_terminated=True),
        lambda d: d.id,
    )


async def _envelopes(table: EnvelopeTable | None) -> _Envelopes:
    found: _Envelopes = {}
    if table is None:
        return found
    for key in await table.list_keys():
        for version, at in await table.list_versions(key):
            envelope = await table.select(key, version)
            if envelope is not None:  # deleted meanwhile: not possible offline, but harmless
                found[(key, version)] = (envelope, at)
    return found
