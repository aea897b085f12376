"""The port every metadata store implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from pullbroker_service.domain.model import RegistryRecord

HostCheck = Callable[[Sequence[RegistryRecord]], None]
"""Judges a write against the other records of its host (every state: a create still
PENDING holds its place too); raises to refuse the write. The store calls it inside the
write's transaction, with other checked writes to that host held off until it ends, so a
check and the write it allows are one step: two writers cannot both pass on a host that
only one of them may have."""


class MetadataStore(Protocol):
    """Registry records. Errors: RegistryNotFound, AlreadyExists (display_name is unique),
    EtagMismatch, BackendUnavailable; and whatever a HostCheck raises."""

    async def create(self, record: RegistryRecord, check: HostCheck | None = None) -> None:
        """Insert `record`; with `check`, only if it passes on the other records of its host
        (nothing is written when it raises)."""
        ...

    async def get(self, registry_id: str) -> RegistryRecord: ...

    async def get_by_display_name(self, display_name: str) -> RegistryRecord: ...

    async def find_by_host(self, host: str) -> list[RegistryRecord]:
        """READY records whose host equals `host` (host[:port], lowercase)."""
        ...

    async def list_page(self, page_size: int, after_id: str | None) -> list[RegistryRecord]:
        """Records ordered by id, starting after `after_id`."""
        ...

    async def replace(
        self, record: RegistryRecord, expected_etag: str, check: HostCheck | None = None
    ) -> None:
        """Write `record` if the stored etag equals `expected_etag`, else EtagMismatch; with
        `check`, only if it passes on the other records of its host, as for `create`."""
        ...

    async def delete(self, registry_id: str, expected_etag: str | None) -> None: ...

    async def list_pending(self) -> list[RegistryRecord]: ...

    async def close(self) -> None: ...
