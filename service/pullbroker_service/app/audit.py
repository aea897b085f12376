"""The audit sink: JSON lines appended to <home>/audit/audit.jsonl, apart from the operational log.

It sits on the token hot path, so `record()` only appends the event to a list: no
serialisation, no I/O, no lock. The batch is written at most `flush_interval` seconds later
(a timer armed by the first event after a write, so an idle broker never wakes up), at once
when `max_buffered` events are waiting, and on `close()`. The tradeoff, on purpose: a crash
(SIGKILL, OOM) loses at most the last `flush_interval` of events; a clean shutdown loses
nothing. Lines go to the page cache with one `write(2)` per batch and are not fsync'ed, so
a power failure can lose what the kernel had not written back yet. A failed write is logged
(`audit_write_failed`, with how many events were lost) and counted in `write_failures`;
the broker keeps serving rather than refusing every call because a disk is full.

The file is opened O_APPEND (each batch lands whole at the end, even with several brokers
on one host) and created 0600 in a 0700 folder; nothing here ever truncates or rewrites it.
It rotates by size (`max_file_bytes`, keeping `keep_files` rotated files: audit_files.py).
Every string is scrubbed against the registered secret values before it is written.

With PostgreSQL configured, each written batch also goes to the shared, append-only trail
every replica writes to (`forward`: audit_forward.py), which `pullbroker audit tail` reads
through the AuditService.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import structlog

from pullbroker_service.app.audit_files import open_append, replaced, rotate_if_full
from pullbroker_service.app.audit_forward import TrailForwarder
from pullbroker_service.domain.audit import Action, AuditEvent, Outcome, outcome_for, role_of
from pullbroker_service.domain.errors import BrokerError
from pullbroker_service.domain.identity import Identity
from pullbroker_service.infra.logging import scrub
from pullbroker_service.infra.request_context import current_call

T = TypeVar("T")

log = structlog.get_logger()

FLUSH_INTERVAL = 0.2
MAX_BUFFERED = 4096


def utc_now() -> datetime:
    return datetime.now(UTC)


def current_request_id() -> str:
    """The request id of the call being served ("" outside a call). A call without an
    x-request-id gets the one its log lines and errors would carry."""
    info = current_call()
    return info.request_id if info is not None else ""


class AuditSink:
    """Append-only audit file. Call `record()` from the event loop; `close()` at shutdown."""

    def __init__(
        self,
        path: Path,
        *,
        flush_interval: float = FLUSH_INTERVAL,
        max_buffered: int = MAX_BUFFERED,
        clock: Callable[[], datetime] = utc_now,
        scrubber: Callable[[str], str] = scrub,
        max_file_bytes: int = 0,
        keep_files: int = 5,
        forward: TrailForwarder | None = None,
    ) -> None:
        self.path = path
        self._max_bytes = max_file_bytes
        self._keep = keep_files
        self.forward = forward
        self._interval = flush_interval
        self._max = max_buffered
        self._clock = clock
        self._scrub = scrubber
        self._buffer: list[AuditEvent] = []
        # The scrubbed JSON of everything but time and request id, per distinct event: a node
        # pulling the same image produces the same middle every time (see _line).
        self._middles: dict[tuple[str, ...], str] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._fd: int | None = open_append(path)
        self.write_failures = 0

    def record(self, event: AuditEvent) -> None:
        """Queue `event`; it is on disk within `flush_interval` seconds."""
        self._buffer.append(event)
        if len(self._buffer) >= self._max or self._fd is None:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()  # no loop to come back later: write now
                return
            self._timer = loop.call_later(self._interval, self.flush)

    def event(
        self,
        action: Action,
        outcome: Outcome,
        caller: Identity | None,
        *,
        registry: str = "",
        repository: str = "",
        scope: str = "",
        deployment: str = "",
        digest: str = "",
        reason: str = "",
    ) -> None:
        """Record an event for `caller` now, with the current call's request id."""
        self.record(
            AuditEvent(
                time=self._clock(),
                action=action,
                outcome=outcome,
                identity=caller.name if caller is not None else "",
                role=role_of(caller),
                registry=registry,
                repository=repository,
                scope=scope,
                deployment=deployment,
                digest=digest,
                reason=reason,
                request_id=current_request_id(),
            )
        )

    def flush(self) -> None:
        """Write every queued event now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        if self._fd is None:
            self._lost(len(batch), "the audit file is closed")
            return
        lines = [self._line(event) for event in batch]
        try:
            if replaced(self._fd, self.path):  # another broker on this host rotated it
                os.close(self._fd)
                self._fd = open_append(self.path)
            _write_all(self._fd, "".join(lines).encode("utf-8"))
            self._fd = rotate_if_full(self._fd, self.path, self._max_bytes, self._keep)
        except OSError as exc:
            self._lost(len(batch), exc.strerror or type(exc).__name__)
        if self.forward is not None:
            self.forward.submit([json.loads(line) for line in lines])

    def close(self) -> None:
        """Flush and close the file; later events are lost (and logged)."""
        self.flush()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def aclose(self) -> None:
        """`close()`, then let the shared trail take what is queued for it."""
        self.close()
        if self.forward is not None:
            await self.forward.aclose()

    def _line(self, event: AuditEvent) -> str:
        fields = event.to_dict()
        if event.reason:  # free text (an error message): scrub and serialise it every time
            scrubbed = {key: self._scrub(value) for key, value in fields.items()}
            return json.dumps(scrubbed, separators=(",", ":"), ensure_ascii=False) + "\n"
        time, request_id = fields.pop("time"), fields.pop("request_id")
        key = tuple(fields.values())
        middle = self._middles.get(key)
        if middle is None:
            scrubbed = {name: self._scrub(value) for name, value in fields.items()}
            middle = json.dumps(scrubbed, separators=(",", ":"), ensure_ascii=False)[1:-1]
            if len(self._middles) >= MAX_BUFFERED:
                self._middles.clear()
            self._middles[key] = middle
        # time is ISO 8601 and request ids are [A-Za-z0-9-_.:] (request_context): neither
        # needs escaping, and json.dumps would quote them the same way.
        return f'{{"time":"{time}",{middle},"request_id":"{request_id}"}}\n'

    def _lost(self, count: int, why: str) -> None:
        self.write_failures += 1
        log.error("audit_write_failed", path=str(self.path), events_lost=count, error=why)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


async def audited(
    sink: AuditSink | None,
    action: Action,
    caller: Identity | None,
    label: str,
    work: Awaitable[T],
    *,
    repository: str = "",
    judge: Callable[[object], tuple[Outcome, str]] | None = None,
) -> T:
    """`await work` and record its outcome: DENIED/FAILED with the error's message when it
    raises a BrokerError, else what `judge` says (ALLOWED by default). `registry` is the
    result's resource name when it has one, else `label` (what the caller asked for)."""
    try:
        result = await work
    except BrokerError as exc:
        if sink is not None:
            sink.event(
                action,
                outcome_for(exc),
                caller,
                registry=label,
                repository=repository,
                reason=str(exc),
            )
        raise
    if sink is not None:
        outcome, reason = judge(result) if judge is not None else (Outcome.ALLOWED, "")
        name = getattr(result, "resource_name", None)
        sink.event(
            action,
            outcome,
            caller,
            registry=name if isinstance(name, str) else label,
            repository=repository,
            reason=reason,
        )
    return result
