"""The port every secret backend implements."""

from __future__ import annotations

from typing import Protocol

from pullbroker_service.domain.model import SecretRef


class SecretBackend(Protocol):
    """Stores credential versions. Implementations convert vendor errors to domain errors:
    unreachable -> BackendUnavailable, missing -> SecretMissing.

    `key` is the registry id; each `put` creates a new version under it and returns the
    reference to that version. Backends that encrypt bind the ciphertext to key and version
    (associated data / encryption context), so a blob copied to another record won't decrypt.
    """

    name: str

    async def put(self, key: str, value: bytes) -> SecretRef:
        """Store a new version of `key` and return its reference."""
        ...

    async def get(self, ref: SecretRef) -> bytes:
        """Read exactly the version `ref` names."""
        ...

    async def delete(self, key: str) -> None:
        """Remove every version of `key`. Idempotent: deleting nothing is not an error."""
        ...

    async def delete_version(self, ref: SecretRef) -> None:
        """Remove one version (a superseded one after rotation). Idempotent."""
        ...

    async def list_keys(self) -> list[str]:
        """Every key this backend holds for pullbroker (the reconciler looks for orphans)."""
        ...

    async def check(self) -> None:
        """Raise BackendUnavailable if the backend cannot be used now."""
        ...

    async def close(self) -> None: ...
