"""The port every metadata store implements."""

from __future__ import annotations

from typing import Protocol

from pullbroker_service.domain.model import RegistryRecord


class MetadataStore(Protocol):
    """Registry records. Errors: RegistryNotFound, AlreadyExists (display_name is unique),
    EtagMismatch, BackendUnavailable."""

    async def create(self, record: RegistryRecord) -> None: ...

    async def get(self, registry_id: str) -> RegistryRecord: ...

    async def get_by_display_name(self, display_name: str) -> RegistryRecord: ...

    async def find_by_host(self, host: str) -> list[RegistryRecord]:
        """READY records whose host equals `host` (host[:port], lowercase)."""
        ...

    async def list_page(self, page_size: int, after_id: str | None) -> list[RegistryRecord]:
        """Records ordered by id, starting after `after_id`."""
        ...

    async def replace(self, record: RegistryRecord, expected_etag: str) -> None:
        """Write `record` if the stored etag equals `expected_etag`, else EtagMismatch."""
        ...

    async def delete(self, registry_id: str, expected_etag: str | None) -> None: ...

    async def list_pending(self) -> list[RegistryRecord]: ...

    async def close(self) -> None: ...
