"""Registry and deployment records as table rows, for both databases.

The two stores' tables have the same columns in the same order; they differ only in how a
value the database has no native type for is held. SQLite keeps flags as 0/1, times as ISO
8601 text and repository globs as a JSON list; PostgreSQL has booleans, timestamptz and
arrays, which psycopg converts itself. An `Encoding` says which, so the field order and
the record types are written once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pullbroker_service.domain.deployment import (
    DeploymentRecord,
    DeploymentState,
    FailureCategory,
    Target,
)
from pullbroker_service.domain.model import RecordState, RegistryKind, RegistryRecord, SecretRef

REGISTRY_FIELDS = (
    "id", "display_name", "kind", "url", "host", "username", "registry_ca_pem", "region",
    "allow_basic_passthrough", "credential_version", "secret_ref", "creator", "create_time",
    "update_time", "etag", "state", "previous_secret_ref", "repositories",
)  # fmt: skip
DEPLOYMENT_FIELDS = (
    "id", "image", "registry_id", "inline_credential", "target", "state", "failure_category",
    "message", "digest", "creator", "reported_by", "create_time", "update_time", "etag",
)  # fmt: skip


@dataclass(frozen=True)
class Encoding:
    """How one database holds flags, times and lists of strings (to it, from it)."""

    flag: Callable[[bool], object]
    time: Callable[[datetime], object]
    read_time: Callable[[Any], datetime]
    strings: Callable[[tuple[str, ...]], object]
    read_strings: Callable[[Any], tuple[str, ...]]


SQLITE = Encoding(
    flag=int,
    time=datetime.isoformat,
    read_time=datetime.fromisoformat,
    strings=lambda values: json.dumps(list(values)),
    read_strings=lambda text: tuple(json.loads(text or "[]")),
)
POSTGRES = Encoding(
    flag=bool,
    time=lambda value: value,
    read_time=lambda value: value,
    strings=list,
    read_strings=lambda values: tuple(values or ()),
)


def registry_row(r: RegistryRecord, enc: Encoding) -> tuple[object, ...]:
    """The values of REGISTRY_FIELDS for `r`."""
    ref = r.secret_ref.to_json() if r.secret_ref is not None else None
    previous = r.previous_secret_ref.to_json() if r.previous_secret_ref is not None else None
    return (
        r.id, r.display_name, r.kind.value, r.url, r.host, r.username, r.registry_ca_pem,
        r.region, enc.flag(r.allow_basic_passthrough), r.credential_version, ref, r.creator,
        enc.time(r.create_time), enc.time(r.update_time), r.etag, r.state.value, previous,
        enc.strings(r.repositories),
    )  # fmt: skip


def registry_record(row: tuple[Any, ...], enc: Encoding) -> RegistryRecord:
    """The record a row of REGISTRY_FIELDS holds."""
    return RegistryRecord(
        id=row[0],
        display_name=row[1],
        kind=RegistryKind(row[2]),
        url=row[3],
        host=row[4],
        username=row[5],
        registry_ca_pem=row[6],
        region=row[7],
        allow_basic_passthrough=bool(row[8]),
        credential_version=int(row[9]),
        secret_ref=SecretRef.from_json(row[10]) if row[10] else None,
        creator=row[11],
        create_time=enc.read_time(row[12]),
        update_time=enc.read_time(row[13]),
        etag=row[14],
        state=RecordState(row[15]),
        previous_secret_ref=SecretRef.from_json(row[16]) if row[16] else None,
        repositories=enc.read_strings(row[17]),
    )


def deployment_row(r: DeploymentRecord, enc: Encoding) -> tuple[object, ...]:
    """The values of DEPLOYMENT_FIELDS for `r`."""
    return (
        r.id, r.image, r.registry_id, enc.flag(r.inline_credential), r.target.policy_name,
        r.state.value, r.failure_category.value, r.message, r.digest, r.creator,
        r.reported_by, enc.time(r.create_time), enc.time(r.update_time), r.etag,
    )  # fmt: skip


def deployment_record(row: tuple[Any, ...], enc: Encoding) -> DeploymentRecord:
    """The record a row of DEPLOYMENT_FIELDS holds."""
    return DeploymentRecord(
        id=row[0],
        image=row[1],
        registry_id=row[2],
        inline_credential=bool(row[3]),
        target=Target.parse(row[4]),
        state=DeploymentState(row[5]),
        failure_category=FailureCategory(row[6]),
        message=row[7],
        digest=row[8],
        creator=row[9],
        reported_by=row[10],
        create_time=enc.read_time(row[11]),
        update_time=enc.read_time(row[12]),
        etag=row[13],
    )
