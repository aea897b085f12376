"""One SQLite file, one worker thread: the plumbing the SQLite-backed adapters share.

The metadata store, the deployment store and the embedded secret store each keep a file in
the home folder. Writes fsync, so they must not block the event loop; a connection is used
from the thread that opened it. Each adapter therefore owns a `SqliteWorker`: one thread, one
connection opened on first use, and sqlite3 errors turned into BackendUnavailable naming the
file and what to check.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pullbroker_service.domain.errors import BackendUnavailable, SchemaTooNew

T = TypeVar("T")


def open_private_database(path: Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection to `path`, created 0600 in a 0700 folder; WAL, autocommit mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def check_schema_version(conn: sqlite3.Connection, path: Path, version: int, *, what: str) -> None:
    """Record `version` in a new file's schema_version table; refuse a newer file's."""
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    if row[0] is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    elif row[0] > version:
        conn.close()
        raise SchemaTooNew(
            f"{what} {path} has schema {row[0]}, newer than this broker's {version}: "
            "upgrade pullbroker"
        )


class SqliteWorker:
    """Runs functions of a connection on one thread; `connect` opens it on first use."""

    def __init__(
        self,
        path: Path,
        connect: Callable[[Path], sqlite3.Connection],
        *,
        what: str,
        thread_name: str,
        passthrough: tuple[type[sqlite3.Error], ...] = (),
    ) -> None:
        self.path = path
        self._connect = connect
        self._what = what
        self._passthrough = passthrough  # errors the caller maps itself (e.g. IntegrityError)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._call, fn)
        except self._passthrough:
            raise
        except sqlite3.Error as exc:
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: sqlite3.Error) -> BackendUnavailable:
        return BackendUnavailable(
            f"{self._what} {self.path} failed ({type(exc).__name__}: {exc}): "
            "check the disk and the file's permissions"
        )

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_conn)
        self._executor.shutdown(wait=True)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._connect(self.path)
        return fn(self._conn)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
