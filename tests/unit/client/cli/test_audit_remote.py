"""`audit tail` through the broker: the last N, then following without repeats, including
an event that committed late with a lower sequence number."""

from __future__ import annotations

from pullbroker.v1 import audit_pb2
from pullbroker_client.cli.audit import Filters
from pullbroker_client.cli.audit_remote import remote_tail


class FakeTrail:
    def __init__(self) -> None:
        self.events: list[audit_pb2.AuditEvent] = []

    def add(self, seq: int) -> None:
        self.events.append(audit_pb2.AuditEvent(sequence=seq, action="token.issue"))

    def list_audit_events(
        self,
        after_sequence: int = 0,
        page_size: int = 0,
        last: bool = False,
        identity: str = "",
        registry: str = "",
        outcome: str = "",
    ) -> audit_pb2.ListAuditEventsResponse:
        found = sorted((e for e in self.events if e.sequence > after_sequence),
                       key=lambda e: e.sequence)  # fmt: skip
        found = found[-page_size:] if last else found[:page_size]
        after = found[-1].sequence if found else after_sequence
        return audit_pb2.ListAuditEventsResponse(events=found, next_after_sequence=after)


def test_last_then_follow_without_repeats() -> None:
    """-n 2 shows the newest two; following prints each later event once, including one
    that committed after a higher sequence number was already shown."""
    trail = FakeTrail()
    for seq in (1, 2, 3):
        trail.add(seq)
    shown: list[int] = []
    steps = iter(range(10))

    def sleep(_seconds: float) -> None:
        step = next(steps)
        if step == 0:
            trail.add(5)
        elif step == 1:
            trail.add(4)  # committed late, below the last sequence already shown
            trail.add(6)

    def stop() -> bool:
        return len(shown) >= 5

    remote_tail(trail, Filters(), 2, lambda e: shown.append(e["sequence"]), follow=True,
                stop=stop, sleep=sleep)  # fmt: skip
    assert shown == [2, 3, 5, 4, 6]
