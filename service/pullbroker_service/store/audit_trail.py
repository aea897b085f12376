"""The shared audit trail port: every replica's audit events in one append-only place.

Events arrive as the audit sink wrote them to its file (dicts of the FIELDS in
domain/audit.py, already scrubbed), are only ever appended, and are read back in order of
arrival, each with a sequence number a reader resumes after (`audit tail --follow`).
There is deliberately no update or delete here: the trail is append-only in code, and the
PostgreSQL table refuses UPDATE, DELETE and TRUNCATE with triggers (migration 0002).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AuditQuery:
    """Which events: after `after` (a sequence number), matching the filters, at most
    `limit`; `last` asks for the newest `limit` instead of the oldest after `after`."""

    after: int = 0
    limit: int = 100
    last: bool = False
    identity: str = ""
    """A glob (`*`, `?`) over the identity."""
    registry: str = ""
    """`registries/<id>`, its id, or a glob."""
    outcome: str = ""


@dataclass(frozen=True)
class StoredAuditEvent:
    seq: int
    fields: Mapping[str, str]
    """The FIELDS of domain/audit.py, plus `replica`."""


class AuditTrail(Protocol):
    async def append(self, events: Sequence[Mapping[str, str]], replica: str) -> None: ...

    async def read(self, query: AuditQuery) -> list[StoredAuditEvent]:
        """Matching events in ascending sequence order."""
        ...
