"""`pullbroker audit tail` through the broker: the shared trail of every replica
(AuditService.ListAuditEvents), for brokers configured with a database.

`--follow` asks for events after the last sequence seen, once a second. Sequence numbers
are handed out when an event is inserted, and two replicas' batches can commit in the
other order; so each poll looks `REWIND` sequence numbers back and skips those already
shown, and an event that committed a moment late is still printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from pullbroker.v1 import audit_pb2

FOLLOW_SECONDS = 1.0
REWIND = 256
_FIELDS = tuple(f.name for f in audit_pb2.AuditEvent.DESCRIPTOR.fields)


class AuditReader(Protocol):
    def list_audit_events(
        self,
        after_sequence: int = 0,
        page_size: int = 0,
        last: bool = False,
        identity: str = "",
        registry: str = "",
        outcome: str = "",
    ) -> audit_pb2.ListAuditEventsResponse: ...


def as_dict(event: audit_pb2.AuditEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in _FIELDS}


def remote_tail(
    client: AuditReader,
    filters: Any,
    count: int,
    show: Callable[[dict[str, Any]], None],
    *,
    follow: bool,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Show the last `count` matching events, then (with `follow`) new ones until `stop()`."""
    wanted = {"identity": filters.identity, "registry": filters.registry}
    wanted["outcome"] = filters.outcome
    newest = client.list_audit_events(page_size=max(count, 1), last=True, **wanted)
    shown = newest.events[-count:] if count else []
    for event in shown:
        show(as_dict(event))
    after = start = newest.next_after_sequence
    seen: set[int] = set()
    while follow and not stop():
        page = client.list_audit_events(
            after_sequence=max(0, after - REWIND), page_size=1000, **wanted
        )
        fresh = [e for e in page.events if e.sequence > start and e.sequence not in seen]
        for event in fresh:
            show(as_dict(event))
            seen.add(event.sequence)
        after = max(after, page.next_after_sequence)
        seen = {s for s in seen if s > after - REWIND}
        if len(page.events) < 1000:
            sleep(FOLLOW_SECONDS)
