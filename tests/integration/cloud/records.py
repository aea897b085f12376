"""Registry records for minter tests (what the metadata store would hand a minter)."""

from __future__ import annotations

from datetime import UTC, datetime

from pullbroker_service.domain.model import RecordState, RegistryKind, RegistryRecord


def record(
    kind: RegistryKind, host: str, *, region: str = "", ca_pem: str = "", name: str = "cloud"
) -> RegistryRecord:
    """A READY record for `host` (url https://host) with no secret reference."""
    now = datetime.now(UTC)
    return RegistryRecord(
        id="r-" + name,
        display_name=name,
        kind=kind,
        url=f"https://{host}",
        host=host,
        username="",
        registry_ca_pem=ca_pem,
        region=region,
        allow_basic_passthrough=False,
        credential_version=1,
        secret_ref=None,
        creator="test",
        create_time=now,
        update_time=now,
        etag="1",
        state=RecordState.READY,
    )
