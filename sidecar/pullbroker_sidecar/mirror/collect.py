"""Keep the node store under its size: remove the least recently used blobs.

"Used" is the mtime of a blob's fingerprint file (`verified/`), which the mirror touches
on every answer it serves from the store; the blob's own mtime cannot move (it is part
of the fingerprint that makes it trusted). A pass runs after each blob the mirror
committed and once at start; passes never overlap (a request during a pass runs one more
after it). A blob removed while a runtime still reads it stays readable to that reader
(an open file outlives its name); the next request downloads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass

import structlog

from pullbroker_sidecar.pull.store import ContentStore

log = structlog.get_logger("pullbroker_sidecar.mirror")


@dataclass(frozen=True)
class _Blob:
    digest: str
    size: int
    used: float


def stored_blobs(store: ContentStore) -> list[_Blob]:
    """Every blob file in the store, with its size and when it was last used."""
    found: list[_Blob] = []
    root = store.layout.blobs_dir
    with contextlib.suppress(FileNotFoundError):
        for algorithm in os.listdir(root):
            with contextlib.suppress(NotADirectoryError, FileNotFoundError):
                for name in os.listdir(root / algorithm):
                    digest = f"{algorithm}:{name}"
                    with contextlib.suppress(FileNotFoundError):
                        st = os.lstat(root / algorithm / name)
                        found.append(_Blob(digest, st.st_size, store.last_used(digest, st)))
    return found


def collect(store: ContentStore, max_size: int) -> tuple[int, int]:
    """Remove least recently used blobs until the store holds at most `max_size` bytes;
    (blobs removed, bytes freed)."""
    blobs = stored_blobs(store)
    total = sum(b.size for b in blobs)
    removed = freed = 0
    for blob in sorted(blobs, key=lambda b: b.used):
        if total - freed <= max_size:
            break
        store.remove_blob(blob.digest)
        removed += 1
        freed += blob.size
    return removed, freed


class Collector:
    """Runs `collect` off the event loop, one pass at a time."""

    def __init__(self, store: ContentStore, max_size: int) -> None:
        self._store = store
        self._max_size = max_size
        self._running: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        """Ask for a pass (now, or right after the one running)."""
        if self._running is not None:
            self._again = True
            return
        self._running = asyncio.create_task(self._passes())

    async def _passes(self) -> None:
        try:
            while True:
                self._again = False
                removed, freed = await asyncio.to_thread(collect, self._store, self._max_size)
                if removed:
                    log.info("store_collected", blobs=removed, bytes=freed)
                if not self._again:
                    return
        finally:
            self._running = None

    async def close(self) -> None:
        """Wait for a pass in progress."""
        if self._running is not None:
            with contextlib.suppress(Exception):
                await self._running
