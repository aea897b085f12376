"""Where the local secret store keeps its envelopes: the port, and the envelope's shape.

`LocalSecretBackend` (local.py) does the cryptography; an `EnvelopeTable` only stores what
it is given: a SQLite file in the home folder (sqlite_envelopes.py, the embedded default) or
a table in the broker's PostgreSQL database (store/postgres_envelopes.py), so replicas share
ciphertexts while the key-encryption key stays in its file, KMS or Vault transit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol

Envelope = tuple[str, bytes, bytes, bytes]
"""KEK name, wrapped data key, nonce, ciphertext."""

Sealer = Callable[[int], Envelope]
"""Seals the credential for the version number the table allots (the AAD names it)."""


class EnvelopeTable(Protocol):
    """Envelopes by (key, version). Errors: BackendUnavailable."""

    async def insert_next_version(self, key: str, seal: Sealer) -> int:
        """Allot `key` its next version (never reused, even after deletions), store
        `seal(version)` under it, and return it: one transaction."""
        ...

    async def insert_version(
        self, key: str, version: int, envelope: Envelope, created_at: datetime
    ) -> None:
        """Store `envelope` as version `version` of `key`, as copied from another table
        (same key, version and KEK): replaces one stored there already, and raises the
        key's version counter to at least `version`. Idempotent."""
        ...

    async def select(self, key: str, version: int) -> Envelope | None: ...

    async def update(self, key: str, version: int, envelope: Envelope) -> None:
        """Replace a stored envelope (re-wrapping); nothing if it was deleted meanwhile."""
        ...

    async def delete(self, key: str) -> None: ...

    async def delete_version(self, key: str, version: int) -> None: ...

    async def list_keys(self) -> list[str]: ...

    async def list_versions(self, key: str) -> list[tuple[int, datetime]]:
        """Stored versions of `key` with when each was written, oldest first."""
        ...

    async def not_under(self, kek: str) -> list[tuple[str, int]]:
        """(key, version) of every envelope wrapped by a KEK other than `kek`."""
        ...

    async def check(self) -> None:
        """BackendUnavailable unless the table answers now."""
        ...

    async def close(self) -> None: ...
