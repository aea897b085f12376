"""The audit sink: append-only 0600 JSON lines, batched writes, scrubbed of secrets."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pullbroker_service.app.audit import AuditSink, audited
from pullbroker_service.domain.audit import FIELDS, Action, AuditEvent, Outcome
from pullbroker_service.domain.errors import NotOwner, QuotaExceeded, RegistryNotFound
from pullbroker_service.domain.identity import Identity
from pullbroker_service.infra.logging import register_secret_value

from tests.harness.canary import find_in_tree, new_canary

ADMIN = Identity("spiffe://pullbroker.local/admin", frozenset({"admin"}))
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def size(path: Path) -> int:
    return path.stat().st_size


def event(action: Action = Action.TOKEN_ISSUE, **fields: str) -> AuditEvent:
    return AuditEvent(WHEN, action, Outcome.ALLOWED, "spiffe://x/node/n1", "node", **fields)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.jsonl"


class TestFile:
    """The file is private, appended to, and never rewritten."""

    def test_private_file_in_private_folder(self, path: Path) -> None:
        """The folder is 0700 and the file 0600, even if it existed with wider permissions."""
        path.parent.mkdir(mode=0o755)
        path.write_text("")
        path.chmod(0o644)
        AuditSink(path).close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_appends_to_what_is_there(self, path: Path) -> None:
        """Opening an existing audit file keeps its lines; new ones follow them."""
        path.parent.mkdir(mode=0o700)
        path.write_text('{"earlier":"line"}\n')
        sink = AuditSink(path)
        sink.record(event())
        sink.close()
        assert [list(line) for line in lines(path)] == [["earlier"], list(FIELDS)]

    def test_line_schema(self, path: Path) -> None:
        """Every line has every field, in order, time in UTC with milliseconds."""
        sink = AuditSink(path)
        sink.record(event(registry="registries/r1", repository="team/app", scope="s"))
        sink.close()
        (line,) = lines(path)
        assert list(line) == list(FIELDS)
        assert line["time"] == "2026-01-02T03:04:05.678+00:00"
        assert line["outcome"] == "allowed"
        assert line["deployment"] == ""


class TestBatching:
    """Events wait in memory briefly and are written together."""

    async def test_written_by_the_timer(self, path: Path) -> None:
        """Without any flush call, queued events reach the file once the interval passes."""
        sink = AuditSink(path, flush_interval=0.01)
        sink.record(event())
        sink.record(event())
        assert size(path) == 0  # nothing is written on the caller's path
        for _ in range(500):
            if size(path):
                break
            await asyncio.sleep(0.01)
        assert len(lines(path)) == 2
        sink.close()

    async def test_full_buffer_is_written_at_once(self, path: Path) -> None:
        """Reaching max_buffered writes the batch without waiting for the timer."""
        sink = AuditSink(path, flush_interval=3600, max_buffered=3)
        for _ in range(3):
            sink.record(event())
        assert len(lines(path)) == 3
        sink.close()

    async def test_close_writes_what_is_queued(self, path: Path) -> None:
        """Shutdown loses nothing."""
        sink = AuditSink(path, flush_interval=3600)
        sink.record(event())
        sink.close()
        assert len(lines(path)) == 1

    def test_outside_a_loop_written_at_once(self, path: Path) -> None:
        """With no event loop to come back later, an event is written immediately."""
        sink = AuditSink(path)
        sink.record(event())
        assert len(lines(path)) == 1
        sink.close()

    def test_after_close_events_are_counted_as_lost(self, path: Path) -> None:
        """An event after close is not written and counts as a write failure."""
        sink = AuditSink(path)
        sink.close()
        sink.record(event())
        assert sink.write_failures == 1
        assert path.read_text() == ""


class TestSecrets:
    """No secret value reaches the audit file, even inside a reason."""

    def test_registered_secret_is_scrubbed(self, path: Path) -> None:
        """A known secret that slipped into an error message is replaced before writing."""
        canary = new_canary("audit")
        register_secret_value(canary)
        sink = AuditSink(path)
        sink.record(event(reason=f"registry said: bad password {canary}"))
        sink.close()
        assert find_in_tree(path.parent, canary) == []
        assert "[redacted]" in lines(path)[0]["reason"]


class TestAudited:
    """`audited` records the outcome of a use case, and its error."""

    async def _run(self, sink: AuditSink, error: Exception | None) -> None:
        async def work() -> str:
            if error is not None:
                raise error
            return "done"

        await audited(sink, Action.REGISTRY_DELETE, ADMIN, "team", work())

    @pytest.mark.parametrize(
        ("error", "outcome"),
        [
            (None, "allowed"),
            (NotOwner("only its creator may delete registry 'team'"), "denied"),
            (QuotaExceeded("slow down", 1.0), "denied"),
            (RegistryNotFound("no registry is named 'team'"), "failed"),
        ],
    )
    async def test_outcome(self, path: Path, error: Exception | None, outcome: str) -> None:
        """Allowed, denied (policy, ownership, limits) and failed are told apart."""
        sink = AuditSink(path)
        if error is None:
            await self._run(sink, None)
        else:
            with pytest.raises(type(error)):
                await self._run(sink, error)
        sink.close()
        (line,) = lines(path)
        assert line["outcome"] == outcome
        assert line["identity"] == ADMIN.name
        assert line["role"] == "admin"
        assert line["reason"] == (str(error) if error else "")


class TestRepeatedEvents:
    """Repeated events reuse their serialised middle and still write exact JSON lines."""

    def test_lines_equal_full_serialisation(self, path: Path) -> None:
        """Each line, first or repeated, parses to exactly the event's fields in order."""
        sink = AuditSink(path, clock=lambda: WHEN)
        events = [
            event(request_id="r-1", registry="registries/a", repository="team/app"),
            event(request_id="r-2", registry="registries/a", repository="team/app"),
            event(request_id="r-3", registry="registries/a", repository='team/"x"\\y'),
        ]
        for e in events:
            sink.record(e)
        sink.close()
        raw = path.read_text().splitlines()
        assert [json.loads(line) for line in raw] == [e.to_dict() for e in events]
        assert [list(json.loads(line)) for line in raw] == [list(FIELDS)] * 3

    def test_secret_registered_later_is_still_scrubbed_in_reasons(self, path: Path) -> None:
        """A reason (free text) is scrubbed each time, even for a value registered later."""
        sink = AuditSink(path, clock=lambda: WHEN)
        canary = new_canary("late")
        sink.record(event(request_id="r-1", reason=f"registry said {canary}"))
        register_secret_value(canary)
        sink.record(event(request_id="r-2", reason=f"registry said {canary}"))
        sink.close()
        reasons = [json.loads(line)["reason"] for line in path.read_text().splitlines()]
        assert canary not in reasons[1]
