"""The change-notification port: which deployments changed, so watchers wake at once.

A `ChangeFeed` calls its listeners with a deployment id when that deployment changed, or
with None when anything may have changed (the feed reconnected after missing notifications:
every watcher re-reads). Watchers still re-read every `resync_interval` seconds without a
notification, as a floor under whatever the feed could lose.

`LocalChangeFeed` is the SQLite one: this process's own writes (`publish`), delivered
in-process. Other brokers on the same SQLite file are seen by the resync re-reads.
PostgreSQL's is `postgres_changes.PostgresChangeFeed` (LISTEN/NOTIFY: every replica's
writes).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Protocol

import structlog

log = structlog.get_logger()

Listener = Callable[[str | None], None]
"""Called with the id that changed, or None for "re-read everything"."""


class ChangeFeed(Protocol):
    resync_interval: float
    """Seconds a watcher waits for a notification before it re-reads anyway."""

    def subscribe(self, listener: Listener) -> None: ...

    def publish(self, key: str) -> None:
        """This process changed `key`: its own listeners hear of it now (other processes
        through the database, where there is one)."""
        ...

    async def close(self) -> None: ...


class Listeners:
    """The subscribed callbacks; one failing listener never silences the others."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def tell(self, key: str | None) -> None:
        for listener in list(self._listeners):
            with suppress(Exception):
                listener(key)


class LocalChangeFeed:
    """In-process notifications (SQLite); other processes are seen by re-reading."""

    def __init__(self, resync_interval: float = 2.0) -> None:
        self.resync_interval = resync_interval
        self._listeners = Listeners()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def publish(self, key: str) -> None:
        self._listeners.tell(key)

    async def close(self) -> None:
        """Nothing to release."""
