"""How a request becomes a registry record: the record a validated spec makes (saved, or
unsaved for a probe), and the spec an update asks for (None fields leave the record's own)."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from pullbroker_service.domain.kinds import RegistrySpec, ValidRegistry
from pullbroker_service.domain.model import (
    Credential,
    RecordState,
    RegistryRecord,
    credential_username,
)

T = TypeVar("T")


def build_record(
    valid: ValidRegistry,
    credential: Credential | None,
    now: datetime,
    *,
    registry_id: str = "",
    creator: str = "",
    etag: str = "",
    state: RecordState = RecordState.READY,
) -> RegistryRecord:
    """A record for a validated spec; with the defaults, an unsaved one for probing."""
    spec = valid.spec
    return RegistryRecord(
        id=registry_id,
        display_name=spec.display_name,
        kind=spec.kind,
        url=spec.url,
        host=valid.host,
        username=credential_username(credential),
        registry_ca_pem=spec.registry_ca_pem,
        region=spec.region,
        allow_basic_passthrough=spec.allow_basic_passthrough,
        repositories=spec.repositories,
        credential_version=1 if credential is not None else 0,
        secret_ref=None,
        creator=creator,
        create_time=now,
        update_time=now,
        etag=etag,
        state=state,
    )


def updated_spec(
    current: RegistryRecord,
    *,
    display_name: str | None,
    registry_ca_pem: str | None,
    allow_basic_passthrough: bool | None,
    repositories: tuple[str, ...] | None,
) -> RegistrySpec:
    """The spec an update asks for, still to be validated; kind, URL and region stay."""
    return RegistrySpec(
        display_name=_or(display_name, current.display_name),
        kind=current.kind,
        url=current.url,
        registry_ca_pem=_or(registry_ca_pem, current.registry_ca_pem),
        region=current.region,
        allow_basic_passthrough=_or(allow_basic_passthrough, current.allow_basic_passthrough),
        repositories=_or(repositories, current.repositories),
    )


def _or(value: T | None, default: T) -> T:
    """An update field: None means "leave as it is"."""
    return default if value is None else value
