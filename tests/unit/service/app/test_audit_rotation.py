"""The audit file rotates by size and keeps `keep_files` rotated files; batches also go to
the shared trail, in order, surviving a trail that is down for a while."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pullbroker_service.app.audit import AuditSink
from pullbroker_service.app.audit_forward import TrailForwarder
from pullbroker_service.domain.audit import Action, AuditEvent, Outcome
from pullbroker_service.domain.errors import BackendUnavailable
from pullbroker_service.store.audit_trail import AuditQuery, StoredAuditEvent

NOW = datetime(2025, 1, 2, tzinfo=UTC)


def event(n: int) -> AuditEvent:
    return AuditEvent(NOW, Action.TOKEN_ISSUE, Outcome.ALLOWED, f"spiffe://x/node/{n}")


def test_rotates_by_size_and_keeps_n_files(tmp_path: Path) -> None:
    """Past max_file_bytes the file becomes .1 (then .2 ...); only keep_files survive, and
    no event is split or lost among the files kept."""
    path = tmp_path / "audit" / "audit.jsonl"
    sink = AuditSink(path, max_file_bytes=1000, keep_files=2)
    for n in range(60):
        sink.record(event(n))
        sink.flush()
    sink.close()
    names = sorted(p.name for p in path.parent.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for file in path.parent.iterdir():
        assert file.stat().st_size <= 1000 + 200
        assert all(json.loads(line) for line in file.read_text().splitlines())
    ordered = [path.with_name("audit.jsonl.2"), path.with_name("audit.jsonl.1"), path]
    kept = [json.loads(line)["identity"] for f in ordered for line in f.read_text().splitlines()]
    assert kept[-1] == "spiffe://x/node/59"
    numbers = [int(identity.rsplit("/", 1)[1]) for identity in kept]
    assert numbers == list(range(numbers[0], 60)), "the files kept hold the newest events"


def test_a_file_rotated_by_another_broker_is_reopened(tmp_path: Path) -> None:
    """Two sinks on one file (two brokers on one host): after one rotates, the other
    writes to the new file, not the rotated one."""
    path = tmp_path / "audit.jsonl"
    one = AuditSink(path, max_file_bytes=300, keep_files=3)
    other = AuditSink(path, max_file_bytes=300, keep_files=3)
    for n in range(4):
        one.record(event(n))
        one.flush()
    other.record(event(99))
    other.flush()
    assert "node/99" in path.read_text()
    one.close()
    other.close()


class FlakyTrail:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []

    async def append(self, events: Sequence[Mapping[str, str]], replica: str) -> None:
        if self.failures:
            self.failures -= 1
            raise BackendUnavailable("down")
        self.batches.append([e["identity"] for e in events])

    async def read(self, query: AuditQuery) -> list[StoredAuditEvent]:
        return []


async def test_batches_reach_the_trail_in_order_after_an_outage(tmp_path: Path) -> None:
    trail = FlakyTrail(failures=1)
    sink = AuditSink(tmp_path / "a.jsonl", forward=TrailForwarder(trail, replica="r1"))
    for n in range(3):
        sink.record(event(n))
        sink.flush()
        await asyncio.sleep(0)
    await sink.aclose()
    assert trail.batches == [["spiffe://x/node/0"], ["spiffe://x/node/1"], ["spiffe://x/node/2"]]
