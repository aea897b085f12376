"""The port every deployment store implements."""

from __future__ import annotations

from typing import Protocol

from pullbroker_service.domain.deployment import DeploymentRecord


class DeploymentStore(Protocol):
    """Deployment records. Errors: DeploymentNotFound, AlreadyExists (the id is unique among
    deployments that are not terminated), EtagMismatch, BackendUnavailable."""

    async def create(self, record: DeploymentRecord) -> None:
        """Insert `record`; a terminated deployment with the same id is replaced."""
        ...

    async def get(self, deployment_id: str) -> DeploymentRecord: ...

    async def list_page(
        self,
        page_size: int,
        after_id: str | None,
        *,
        registry_id: str | None = None,
        include_terminated: bool = False,
    ) -> list[DeploymentRecord]:
        """Records ordered by id, starting after `after_id`, optionally of one registry."""
        ...

    async def referencing(self, registry_id: str) -> list[DeploymentRecord]:
        """Deployments not terminated that use `registry_id`, ordered by id."""
        ...

    async def replace(self, record: DeploymentRecord, expected_etag: str) -> None:
        """Write `record` if the stored etag equals `expected_etag`, else EtagMismatch."""
        ...

    async def delete(self, deployment_id: str) -> None:
        """Remove a record (rolling back a create that could not finish). Idempotent."""
        ...

    async def close(self) -> None: ...
