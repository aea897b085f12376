"""Forwarding the audit sink's batches to the shared trail (PostgreSQL), off the hot path.

The sink writes its file first (that never waits on the network), then hands the same
scrubbed events here. One task appends the batches in order; while the database is down
it keeps them (up to `max_batches`, then the oldest are dropped and the loss logged) and
retries every second, so a short outage loses nothing from the shared trail. At shutdown,
what is queued gets `drain_seconds` to land.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from collections.abc import Mapping
from contextlib import suppress

import structlog

from pullbroker_service.domain.errors import BrokerError
from pullbroker_service.store.audit_trail import AuditTrail

log = structlog.get_logger()

MAX_BATCHES = 256
_RETRY_SECONDS = 1.0


def replica_name() -> str:
    """This process among the replicas: host name (the pod's) and PID."""
    return f"{socket.gethostname()}:{os.getpid()}"


class TrailForwarder:
    """Appends each submitted batch to `trail`, in order, from one background task."""

    def __init__(
        self,
        trail: AuditTrail,
        *,
        replica: str | None = None,
        max_batches: int = MAX_BATCHES,
        drain_seconds: float = 5.0,
    ) -> None:
        self._trail = trail
        self.replica = replica or replica_name()
        self._queue: deque[list[Mapping[str, str]]] = deque()
        self._max = max_batches
        self._drain = drain_seconds
        self._task: asyncio.Task[None] | None = None

    def submit(self, events: list[Mapping[str, str]]) -> None:
        if len(self._queue) >= self._max:
            dropped = self._queue.popleft()
            log.error("audit_trail_write_failed", events_lost=len(dropped), error="queue full")
        self._queue.append(events)
        if self._task is None or self._task.done():
            with suppress(RuntimeError):  # no running loop: the next submit starts it
                self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        failing = False
        while self._queue:
            try:
                await self._trail.append(self._queue[0], self.replica)
            except BrokerError as exc:
                if not failing:
                    log.warning("audit_trail_unavailable", error=str(exc), queued=len(self._queue))
                failing = True
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            self._queue.popleft()
            failing = False

    async def aclose(self) -> None:
        """Give queued batches `drain_seconds` to land, then stop."""
        task = self._task
        if task is None:
            return
        with suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), self._drain)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        if self._queue:
            lost = sum(len(batch) for batch in self._queue)
            log.error("audit_trail_write_failed", events_lost=lost, error="shutdown")
